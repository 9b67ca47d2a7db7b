"""Operating the service: log lines (``logging_setup.py``), Prometheus metrics (``metrics.py``), the stop
sequence behind a load balancer (``drain.py``), the container health check (``healthcheck.py``) and one way
to start the server as a child process and wait for it (``server_process.py``)."""
