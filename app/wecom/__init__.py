"""Everything that speaks WeCom's protocol: callback crypto, event parsing, the API client."""
