"""Pure decisions: no faust, aiokafka or aiohttp imports here (a test enforces it)."""
