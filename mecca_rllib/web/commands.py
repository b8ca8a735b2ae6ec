"""``mecca serve``: the browser UI on a local port.

    mecca serve --checkpoint runs/exported --data phantoms/     # http://127.0.0.1:8765/

Binds 127.0.0.1 by default; over SSH, forward the port (``ssh -L 8765:localhost:8765 host``)
rather than binding a public address: the server has no authentication.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "host_warning", "register", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning printed when serving on a non-loopback address, else None."""
    if is_loopback(host):
        return None
    return (f"warning: serving on {host}: anyone who can reach this machine on that address can "
            "load scans and run the model (there is no authentication); prefer the default "
            f"{DEFAULT_HOST} and an SSH tunnel")


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {port}")
    return port


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mecca serve``."""
    from mecca_rllib.session_commands import add_model_options

    p = subparsers.add_parser(
        "serve", help="browser UI: interactive segmentation with advice regions",
        description="Serve the interactive segmentation page: pick a case of --data or upload a "
        "NIfTI, click on boundaries, Step, and export the segmentation.",
    )  # fmt: skip
    add_model_options(p)
    p.add_argument("--data", default=None, help="dataset folder (MSD, BraTS or images/+labels/) to list cases from")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--channel", default=None, help="channel index or name of 4D images in --data")
    p.add_argument("--label-value", type=int, default=None,
                   help="label class of --data cases used as reference (default: any > 0)")
    p.add_argument("--idle-timeout", type=_positive(float), default=30.0,
                   help="minutes without a request after which a tab's session is dropped (default 30)")
    p.add_argument("--max-upload-mb", type=_positive(float), default=256.0,
                   help="largest accepted upload in MiB (default 256)")
    p.add_argument("--max-sessions", type=_positive(int), default=16, help="most open tabs (default 16)")
    p.add_argument("--device", default=None, help="torch device of the model, e.g. cuda (default cpu)")
    p.add_argument("--k", type=_positive(int), default=5, help="number of advice regions (default 5)")
    p.add_argument("--roi-margin", type=int, default=6,
                   help="voxels added around the first clicks' box to form the region of interest (default 6)")
    p.add_argument("--hint-kernel", type=_positive(int), default=None,
                   help="hint kernel in network voxels (default: the checkpoint's training value)")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Build the app and run uvicorn until interrupted."""
    try:
        import uvicorn

        from mecca_rllib.web.app import LOOPBACK_HOSTS, create_app
    except ModuleNotFoundError as err:
        raise ValueError(f"the web UI needs the 'web' extra ({err.name} is missing): "
                         "pip install 'mecca-rllib[web]'") from None
    warning = host_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    channel = args.channel
    if channel is not None and channel.lstrip("-").isdigit():
        channel = int(channel)
    session_kwargs = {"k": args.k, "roi_margin": args.roi_margin, "hint_kernel": args.hint_kernel,
                      "backend": getattr(args, "backend", "torch"), "readout": args.readout}
    if args.device:
        session_kwargs["device"] = args.device
    app = create_app(
        args.checkpoint, args.data, channel=channel, label_value=args.label_value,
        idle_timeout_s=60.0 * args.idle_timeout, max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_sessions=args.max_sessions, session_kwargs=session_kwargs,
        allowed_hosts=LOOPBACK_HOSTS if warning is None else ("*",),
    )  # fmt: skip
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"mecca serve: open http://{host}:{args.port}/ (Ctrl+C to stop)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mecca_rllib.web.commands serve ...`` (the same as ``mecca serve ...``)."""
    parser = argparse.ArgumentParser(prog="mecca")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"mecca {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
