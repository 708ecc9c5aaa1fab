"""gunicorn settings for the web front end (team deployment).

flask-sock needs a threaded worker: each open WebSocket holds one thread for its lifetime, so
`threads` bounds the live connections per process (workers x threads in total). The thread count
is BOOCODE_WEB_THREADS, the same number the WebSocket caps are computed from (web/access.py), so
the threads they keep back for REST and /health really exist. A socket's thread only waits on its
mailbox (the process' hub sends live events, web/livehub.py), so hundreds per process are cheap:
about 80 KiB each, threads made only as sockets open (docs/events.md). web.server.ThreadWorker is gunicorn's
threaded worker answering its own 400/414/431 in the API's error shape.
"""

from orchestrator.settings import load_settings

bind = "0.0.0.0:8765"
worker_class = "web.server.ThreadWorker"
workers = 2
threads = load_settings().web_threads
# gthread workers heartbeat from their main loop, so long-lived sockets do not trip this.
timeout = 30
graceful_timeout = 10
keepalive = 5
control_socket_disable = True
accesslog = "-"
errorlog = "-"
