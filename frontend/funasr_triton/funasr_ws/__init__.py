"""FunASR runtime WebSocket surface (`/ws/v1/funasr`): the protocol of modelscope/FunASR's
`funasr_wss_server.py` / `funasr-wss-server-2pass` and their clients, modes offline, online and 2pass.
`protocol.py` holds the wire models, `session.py` parses, drives the services and renders, `router.py` is the
endpoint."""
