"""Tagged mass sends (群发, issue #5): a campaign = content + audience filter + scope + schedule.

- ``model``: the spec (``CampaignSpec``), as a YAML file or the ``POST /api/campaigns`` body.
- ``audience``: the filter grammar and its SQL (``resolve_audience``, ``count_audience``).
- ``states``: the state machine (``move``: a conditional UPDATE).
- ``store``: scope enforcement, create, read (``plan``, ``create``, ``to_json``).
"""
