"""Start the lungdemo web demo: ``python app.py [--model REF] [--host H] [--port P] [--share]``.

``demo`` is built at import so ``gradio app.py`` and Hugging Face Spaces find it. Every flag has
an environment variable (what Spaces and reloads use): ``LUNGDEMO_MODEL`` (a model folder or
``user/repo[@revision]``; default the shipped model), ``GRADIO_SERVER_NAME`` (default 127.0.0.1),
``GRADIO_SERVER_PORT`` (default 7860), ``GRADIO_SHARE=1`` (a temporary public link; needs internet),
``LUNGDEMO_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; default auto: a GPU when there is one).
"""

from __future__ import annotations

import os

# Before gradio is imported: no usage analytics and no version check leave this machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse
import logging
import sys
from collections.abc import Sequence

from lungdemo.device import DeviceError, add_device_argument, resolve_device
from lungdemo.errors import report_error
from lungdemo.loading import ModelLoadError
from lungdemo.web.demo import build_demo, launch_options

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
TRUE_WORDS = {"1", "true", "yes", "on"}


def fail(message: str) -> SystemExit:
    """Print ``error: message`` on stderr; the SystemExit to raise carries the CLIs' status."""
    return SystemExit(report_error(message))


def _env_port() -> int:
    raw = os.environ.get("GRADIO_SERVER_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise fail(f"GRADIO_SERVER_PORT must be a port number, got {raw!r}") from None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Flags, with environment variables as their defaults (flags win)."""
    parser = argparse.ArgumentParser(description="lungdemo web demo (research demo, not a medical device)")
    parser.add_argument(
        "--model",
        default=os.environ.get("LUNGDEMO_MODEL") or None,
        help="model folder or Hub repo user/repo[@revision] (env LUNGDEMO_MODEL; default: the shipped model)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST,
        help=f"address to listen on; 0.0.0.0 for every interface (env GRADIO_SERVER_NAME; default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_port(),
        help=f"port to listen on (env GRADIO_SERVER_PORT; default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--share",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("GRADIO_SHARE", "").strip().lower() in TRUE_WORDS,
        help="also create a temporary public share link (env GRADIO_SHARE=1; needs internet)",
    )
    add_device_argument(parser, env=True)
    return parser.parse_args(list(argv))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal request otherwise
    ARGS = parse_args(sys.argv[1:])
else:  # imported by `gradio app.py` reloads, Spaces or tests: environment variables only
    ARGS = parse_args([])

try:
    DEVICE = resolve_device(ARGS.device)  # before the model download: a missing GPU fails at once
    demo, state = build_demo(ARGS.model, device=str(DEVICE))
except (DeviceError, ModelLoadError) as exc:
    if __name__ == "__main__":
        raise fail(str(exc)) from None
    raise


def main(args: argparse.Namespace) -> None:
    """Launch ``demo``; a share link that cannot be created leaves the local app running."""
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        prevent_thread_lock=True,
        quiet=True,  # Gradio's own hint says to edit launch(); ours names the flag
        **launch_options(),
    )
    print(f"* Running on local URL:  {demo.local_url}", flush=True)
    if not args.share:
        print("* For a temporary public link, add --share (or set GRADIO_SHARE=1)", flush=True)
    elif not demo.share_url:
        print(
            "\nNo public share link: it needs a connection to Gradio's share servers (see the message "
            f"above). The app is still running locally at {demo.local_url}",
            file=sys.stderr,
            flush=True,
        )
    demo.block_thread()


if __name__ == "__main__":
    main(ARGS)
