"""gunicorn settings for the web front end (team deployment).

flask-sock needs a threaded worker: each open WebSocket holds one thread for its lifetime, so
`threads` bounds the live connections per process (workers x threads in total).
"""

bind = "0.0.0.0:8765"
worker_class = "gthread"
workers = 2
threads = 64
# gthread workers heartbeat from their main loop, so long-lived sockets do not trip this.
timeout = 30
graceful_timeout = 10
keepalive = 5
control_socket_disable = True
accesslog = "-"
errorlog = "-"
