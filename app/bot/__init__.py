"""The bot's answers to advisors: which cards apply (answers.py) and how an answer gets back to
WeCom in time, as a passive reply or an app message (reply.py)."""
