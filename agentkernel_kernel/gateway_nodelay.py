"""Enterprise Gateway configuration: its kernel websockets write with TCP_NODELAY.

EG 3.x's kernel websocket (jupyter_server 1.x's ``ZMQChannelsHandler``) writes each Jupyter
message as a small frame with Nagle's algorithm on, so against a client that delays its ACKs
(Linux's default, browsers) every second reply waits up to 40 ms for one. Tornado's documented
remedy is ``WebSocketHandler.set_nodelay(True)`` once the connection is open; this file is a
traitlets configuration file for the gateway that puts the gateway's own channels handler
(subclassed, nothing else changed) in its handler table with that call.

Pass it to the gateway (it runs in the gateway's Python, which needs nothing of agentkernel)::

    NODELAY=$(/opt/agentkernel/bin/python -m agentkernel_kernel.gateway_nodelay)
    jupyter enterprisegateway --config="$NODELAY" ...

Run as a program (in agentkernel's Python) it prints its own path and imports nothing.
"""

if __name__ == "__main__":
    print(__file__)
else:  # loaded by the gateway as a configuration file (traitlets runs it before the web app)
    from enterprise_gateway.services.kernels import handlers as _eg_kernel_handlers

    class NoDelayChannelsHandler(_eg_kernel_handlers.ZMQChannelsHandler):
        """The gateway's kernel websocket, with TCP_NODELAY set once it is open."""

        def open(self, *args, **kwargs):
            result = super().open(*args, **kwargs)
            self.set_nodelay(True)
            return result

    _eg_kernel_handlers.default_handlers[:] = [
        (route[0], NoDelayChannelsHandler, *route[2:])
        if route[1] is _eg_kernel_handlers.ZMQChannelsHandler else route
        for route in _eg_kernel_handlers.default_handlers
    ]
