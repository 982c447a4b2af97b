"""The page's HTTP side (aiohttp): static files, the snapshot, its stream, and the two POSTs.

    GET  /                               the page (static/index.html, app.js, style.css: no build step)
    GET  /api/state                      the current snapshot (JSON)
    GET  /api/events                     every new snapshot, pushed (Server-Sent Events)
    POST /api/produce                    {node, topic, partition?, key?, value}: one record, with its hops
    POST /api/brokers/{id}/{action}      kill | pause | resume | restart (local cluster on loopback only)

Every refusal is a JSON {"error": "INVALID_REQUEST: ..."} in one line with its status (400, 403, 404,
405, 413, 415, 429); an unexpected failure is a 500 with one line, and the process goes on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from client.ui import validation
from client.ui.controls import ControlPolicy, control_broker
from client.ui.lesson import produce_through
from client.ui.poller import ClusterWatch
from client.ui.validation import RequestError

log = logging.getLogger("raftka.ui")

STATIC_DIR = Path(__file__).parent / "static"
MAX_SUBSCRIBERS = 64            # browsers on /api/events at once; more get 503
KEEPALIVE_S = 15.0              # an SSE comment this often keeps proxies and idle timers from closing the stream
PRODUCES_AT_ONCE = 2            # the form's producers run in threads: a burst of clicks waits its turn
SECURITY_HEADERS = {
    # Nothing from elsewhere, no inline script, no framing (the kill buttons must not be clickjacked).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
WATCH = web.AppKey("watch", ClusterWatch)
POLICY = web.AppKey("policy", ControlPolicy)
HUB = web.AppKey("hub", object)
BIND = web.AppKey("bind", list)                 # [host, port] the page listens on
SLOTS = web.AppKey("produce_slots", asyncio.Semaphore)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)


class Hub:
    """The SSE subscribers; each keeps only the newest snapshot, so a slow browser never piles them up."""

    def __init__(self) -> None:
        self.subscribers: set[_Subscriber] = set()
        self.closing = False

    def publish(self, text: str) -> None:
        for s in self.subscribers:
            s.latest = text
            s.ready.set()

    def close(self) -> None:
        self.closing = True
        for s in self.subscribers:
            s.ready.set()


class _Subscriber:
    def __init__(self, latest: str) -> None:
        self.latest = latest
        self.ready = asyncio.Event()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": f"INVALID_REQUEST: {message}"}, status=status,
                             headers={"Cache-Control": "no-store"})


def _http_error_line(request: web.Request, e: web.HTTPException) -> str:
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return f"{request.method} is not allowed on {request.path[:100]} (allowed: {allowed})"
    if isinstance(e, web.HTTPNotFound):
        return f"no such page or API: {request.path[:100]}"
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return f"the body is larger than {validation.MAX_BODY_BYTES} bytes"
    return e.reason


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """Every refusal as one JSON line; nothing escapes as a traceback or ends the process."""
    try:
        bind_host, port = request.app[BIND]
        validation.check_host(request.headers.get("Host", ""), bind_host, port)   # GETs too: no rebinding reads
        return await handler(request)
    except RequestError as e:
        return _error(e.status, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, _http_error_line(request, e))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as e:  # noqa: BLE001 - one line for the user, the process lives on
        log.warning("ui request %s %s failed: %s: %s", request.method, request.path[:100], type(e).__name__, e)
        return web.json_response({"error": f"INTERNAL_ERROR: {type(e).__name__}: the page could not answer"},
                                 status=500)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def state(request: web.Request) -> web.Response:
    text = request.app[WATCH].current_json()
    return web.Response(text=text or "{}", content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the current snapshot at once, then each new one as the poller makes it."""
    hub: Hub = request.app[HUB]
    if len(hub.subscribers) >= MAX_SUBSCRIBERS:
        raise RequestError(503, f"too many pages open ({MAX_SUBSCRIBERS}); close one")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    me = _Subscriber(request.app[WATCH].current_json())
    me.ready.set()
    hub.subscribers.add(me)
    try:
        while not hub.closing:
            try:
                await asyncio.wait_for(me.ready.wait(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            me.ready.clear()
            if hub.closing:
                break
            if me.latest:
                await response.write(f"data: {me.latest}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass   # the browser went away
    finally:
        hub.subscribers.discard(me)
    return response


async def _json_post(request: web.Request) -> dict:
    bind_host, port = request.app[BIND]
    validation.check_post_origin(request.headers, bind_host, port)
    return validation.parse_json_object(await request.read())


async def produce(request: web.Request) -> web.Response:
    body = await _json_post(request)
    watch: ClusterWatch = request.app[WATCH]
    form = validation.parse_produce(body, watch.known_brokers())
    address = watch.broker_address(form.node)
    if address is None:
        raise RequestError(404, f"no address known for broker {form.node}")
    slots = request.app[SLOTS]
    if slots.locked():
        raise RequestError(429, "another record is on its way; try again when it is answered")
    async with slots:
        outcome = await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR], produce_through,
                                                                   form, address)
    return web.json_response(outcome.to_json())


async def control(request: web.Request) -> web.Response:
    body = await _json_post(request)
    if body:
        raise RequestError(400, "a broker control takes no fields: send {}")
    policy: ControlPolicy = request.app[POLICY]
    message = control_broker(policy, int(request.match_info["id"]), request.match_info["action"])
    log.warning("ui control: %s", message)
    return web.json_response({"ok": True, "message": message})


def make_app(watch: ClusterWatch, policy: ControlPolicy, bind_host: str, port: int) -> web.Application:
    """The app; ``port`` is fixed up by serve() once the socket is bound (``--port 0``)."""
    app = web.Application(middlewares=[_errors], client_max_size=validation.MAX_BODY_BYTES)
    app[WATCH], app[POLICY], app[HUB], app[BIND] = watch, policy, Hub(), [bind_host, port]
    app[SLOTS] = asyncio.Semaphore(PRODUCES_AT_ONCE)
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=PRODUCES_AT_ONCE, thread_name_prefix="ui-produce")
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/produce", produce)
    app.router.add_post(r"/api/brokers/{id:\d{1,9}}/{action:[a-z]{1,16}}", control)
    app.on_response_prepare.append(_security_headers)
    return app


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def serve(watch: ClusterWatch, policy: ControlPolicy, host: str, port: int) -> int:
    """Bind, print the address line, start the watch, run until SIGTERM / SIGINT. 2 if the port is taken."""
    app = make_app(watch, policy, host, port)
    hub: Hub = app[HUB]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=2.0)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        print(f"kclient ui: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr, flush=True)
        return 2
    bound_port = runner.addresses[0][1]
    app[BIND][1] = bound_port
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)

    def publish(text: str) -> None:
        try:
            loop.call_soon_threadsafe(hub.publish, text)
        except RuntimeError:
            pass   # the loop is closing: nobody is left to tell

    watch.set_publisher(publish)
    watch.start()
    print(f"raftka ui: {url_of(host, bound_port)}", flush=True)
    try:
        await stopped.wait()
    finally:
        hub.close()
        watch.stop()
        await runner.cleanup()
        app[EXECUTOR].shutdown(wait=False, cancel_futures=True)
    return 0
