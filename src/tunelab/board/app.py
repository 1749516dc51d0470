"""`tunelab board RUNS_DIR`: the sweep served on localhost (Flask), refreshed as cells finish.

Routes (all read-only; nothing is written into the sweep directory):
    /                                  the page (pages.PAGE): polls /api/summary every 2 s
    /api/summary                       counts, leaderboard rows, plot names, cells and their states
    /api/plots/<name>                  a report plot (PNG), rebuilt when a cell finishes
    /api/cells/<id>/log                the end of the cell's log (text; grows while it runs)
    /api/cells/<id>/curves             learning curves from the cell's logs.csv (JSON; .png: a plot)
    /api/cells/<id>/files/<name>       one of the cell's result files (data.CELL_FILES)
    /api/predict   POST {cell, text}   the playground: the cell's saved predictor on one sentence
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import socket
import sys
import threading
from pathlib import Path

from tunelab.errors import UserError

POLL_SECONDS = 2


def create_app(root: Path):
    from flask import Flask, Response, jsonify, request, send_file

    from tunelab.board.data import SweepView, plot_curves
    from tunelab.board.pages import page
    from tunelab.board.playground import Playground

    view, playground = SweepView(root), Playground()
    app = Flask("tunelab.board")
    app.extensions["tunelab_view"] = view

    @app.errorhandler(LookupError)
    def not_found(err):
        return jsonify(error=str(err).strip("'\"")), 404

    @app.errorhandler(UserError)
    def refused(err):  # a cell without weights, a damaged config: tunelab's own message, no traceback
        return jsonify(error=str(err)), 409

    @app.get("/")
    def index():
        return Response(page(POLL_SECONDS), mimetype="text/html")

    @app.get("/api/summary")
    def summary():
        return jsonify(view.summary())

    @app.get("/api/plots/<name>")
    def plot(name: str):
        plots = view.plots()
        if name not in plots:
            raise LookupError(f"no plot {name} (yet): plots appear once a cell has finished")
        return Response(plots[name], mimetype="image/png")

    @app.get("/api/cells/<cell_id>/log")
    def log(cell_id: str):
        return Response(view.log(cell_id), mimetype="text/plain; charset=utf-8")

    @app.get("/api/cells/<cell_id>/curves")
    def curves(cell_id: str):
        return jsonify(view.curves(cell_id))

    @app.get("/api/cells/<cell_id>/curves.png")
    def curves_png(cell_id: str):
        data = view.curves(cell_id)
        if not data:
            raise LookupError(f"cell {cell_id} has no learning curves (no logs.csv: unfinished, or train.log_to without csv)")
        return Response(plot_curves(data, cell_id), mimetype="image/png")

    @app.get("/api/cells/<cell_id>/files/<name>")
    def cell_file(cell_id: str, name: str):
        return send_file(view.cell_file(cell_id, name), mimetype="text/plain; charset=utf-8")

    @app.post("/api/predict")
    def predict():
        body = request.get_json(silent=True) or {}
        text, cell_id = body.get("text"), body.get("cell")
        if not isinstance(text, str) or not text.strip():
            return jsonify(error="type a sentence to label"), 400
        if not isinstance(cell_id, str):
            return jsonify(error="choose a finished cell"), 400
        directory = view.cell_dir(cell_id)
        if not (directory / "metrics.json").is_file():
            return jsonify(error=f"cell {cell_id} has not finished: nothing to load yet"), 409
        return jsonify(playground.predict(directory, text.strip()))

    return app


def serve(root: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until Ctrl-C; port 0 picks a free one (the printed address says which)."""
    try:
        import flask  # noqa: F401
    except ImportError:
        raise UserError("`tunelab board` needs Flask: install tunelab with its board extra "
                        "(pip install 'tunelab[board]'; `make install` does)") from None
    from werkzeug.serving import make_server

    app = create_app(root)  # a bad RUNS_DIR stops here, before any port is taken
    app.extensions["tunelab_view"].summary()  # a damaged sweep.json exits 2 now; the first page load answers at once
    try:
        # bound here, not by werkzeug: on a busy port it prints its own text and calls sys.exit(1)
        listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); "
                        f"another program (another board?) may use it: choose another with --port") from None
    with listening:
        server = make_server(host, port, app, threaded=True, fd=listening.fileno())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per poll would bury everything else
    if not is_loopback(host):
        print(f"warning: the board listens on {host}, not only on this machine; it has no login, so anyone who "
              f"can reach it can read the results and run the saved models", file=sys.stderr)
    print(f"board: http://{host if ':' not in host else f'[{host}]'}:{server.socket.getsockname()[1]}/  "
          f"(sweep {Path(root)}; Ctrl-C stops)", flush=True)
    # torch and transformers (the cell log's module imports them; the playground needs them) load in the
    # background while the page is read, so the first click on a cell does not wait seconds for them
    threading.Thread(target=importlib.import_module, args=("tunelab.sweep.cell",), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
