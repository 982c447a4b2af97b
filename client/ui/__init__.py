"""kclient ui: the live cluster page (brokers, partitions, the metadata log, groups, the lesson's hops).

    snapshot.py    builds the page's JSON snapshot from the client library's answers (no I/O)
    validation.py  checks the page's requests (produce form, broker controls) before anything runs
    controls.py    kill -9 / pause / resume / restart of a local broker, by the PID its data dir names
    poller.py      background threads that ask the cluster and follow its metadata log
    server.py      the aiohttp app: static files, /api/state, /api/events (SSE), the POSTs
    cli_ui.py      `kclient ui`
"""
