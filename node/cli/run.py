"""`alliance run`: one node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import cProfile
import logging
import signal
from pathlib import Path

import trio

from node.config import NodeConfig, load_config
from node.errors import AllianceError
from node.ops.logs import configure_logging
from node.ops.notify import Notifier, serve_node
from node.server import run_node

log = logging.getLogger("alliance.node")


async def run_until_signal(config: NodeConfig) -> None:
    notifier = Notifier.from_env()  # systemd's Type=notify; a no-op without $NOTIFY_SOCKET
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                node = await nursery.start(run_node, config)
                nursery.start_soon(serve_node, notifier, node.status.status, node.driver.loop_alive)
                async for signum in signals:
                    log.info("event=shutdown signal=%s", signal.Signals(signum).name)
                    notifier.stopping()
                    nursery.cancel_scope.cancel()
                    break
    finally:
        notifier.close()


def cmd_run(args: argparse.Namespace) -> None:
    config = load_config(Path(args.home))
    configure_logging(args.log_level or config.log_level, config.log_format)
    if args.profile is None:
        trio.run(run_until_signal, config)
        return
    profile_path = Path(args.profile)
    if not profile_path.parent.is_dir():
        raise AllianceError(f"--profile {profile_path}: directory {profile_path.parent} does not exist")
    profiler = cProfile.Profile()
    profiler.enable()
    trio.run(run_until_signal, config)
    profiler.disable()
    profiler.dump_stats(profile_path)
    log.info("event=profile_written path=%s", profile_path)
