"""The Kedro pipeline pictured: a PNG of kedro-viz's flowchart (``make dag``).

``kedro viz build`` (which does not reach the network) writes the static kedro-viz site
to ``build/``; this script serves that folder on 127.0.0.1 for a moment, opens it in headless
Chromium (Playwright, driving the system's browser: nothing is downloaded), waits for
the flowchart of ``__default__`` to be drawn and screenshots it, light theme, without
the side panels. The image is written atomically (a failed render leaves the old one).

    .venv/bin/kedro viz build && .venv/bin/python scripts/pipeline_image.py docs/pipeline.png
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

logger = logging.getLogger("pipeline_image")

# kedro-viz reads its settings from localStorage "KedroViz": set them on the same
# origin, then open the app (no feature tour, no side panels, labels on; namespaces
# such as the baselines' stl.<task> branches expanded)
SNAPSHOT_PAGE = """<!doctype html><meta charset="utf-8"><script>
localStorage.setItem("KedroViz", JSON.stringify({
  theme: "light", showFeatureHints: false, textLabels: true,
  visible: {sidebar: false, miniMap: false},
  display: {globalNavigation: false, sidebar: false, miniMap: false,
            expandPipelinesBtn: false, exportBtn: false, labelBtn: false,
            layerBtn: false, orientationBtn: false, zoomToolbar: false,
            metadataPanel: false}}));
location.replace("index.html?expandAllPipelines=true");  // every branch drawn
</script>
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug(format, *args)


# drawn: the nodes are in the SVG, the loading icon is gone, the zoom-to-fit has ended
DRAWN = """() => document.querySelectorAll('.pipeline-flowchart__nodes .pipeline-node').length > 0
  && !document.querySelector('.pipeline-loading-icon--visible')
  && !document.querySelector('.pipeline-flowchart__zoom-wrapper--animating')"""


def render(site: Path, output: Path, *, width: int, height: int, browser: str) -> int:
    """Serve ``site`` on 127.0.0.1 and screenshot its flowchart into ``output`` once it
    is drawn; returns the number of nodes drawn (tasks and datasets)."""
    if not (site / "index.html").is_file():
        raise SystemExit(f"{site}/index.html not found: run `kedro viz build` first")
    from playwright.sync_api import sync_playwright  # the `viz` extra

    with tempfile.TemporaryDirectory() as tmp:
        served = Path(tmp) / "site"
        shutil.copytree(site, served)
        (served / "snapshot.html").write_text(SNAPSHOT_PAGE)
        handler = functools.partial(_QuietHandler, directory=str(served))
        shot = Path(tmp) / "pipeline.png"
        with (
            ThreadingHTTPServer(("127.0.0.1", 0), handler) as server,
            sync_playwright() as p,
        ):
            threading.Thread(target=server.serve_forever, daemon=True).start()
            chromium = p.chromium.launch(executable_path=browser,
                                         args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            try:
                page = chromium.new_page(viewport={"width": width, "height": height})
                page.goto(f"http://127.0.0.1:{server.server_port}/snapshot.html")
                page.wait_for_function(DRAWN, timeout=120_000, polling=250)
                page.wait_for_timeout(500)  # the last transition's frame
                nodes = page.locator(
                    ".pipeline-flowchart__nodes .pipeline-node"
                ).count()
                page.screenshot(path=str(shot))
            finally:
                chromium.close()
                server.shutdown()
        if not shot.read_bytes().startswith(PNG_SIGNATURE):
            raise SystemExit(f"{browser} wrote something that is not a PNG")
        output.parent.mkdir(parents=True, exist_ok=True)
        temp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        shutil.copyfile(shot, temp)
        os.replace(temp, output)
    logger.info("Wrote %s (%dx%d, %d nodes drawn)", output, width, height, nodes)
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the PNG to write")
    parser.add_argument("--site", type=Path, default=Path("build"),
                        help="what `kedro viz build` wrote (default: build)")  # fmt: skip
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shutil.which(args.browser) is None:
        sys.exit(
            f"{args.browser!r} not found: install Chromium (Debian: apt-get install chromium)"
        )
    render(
        args.site,
        args.output,
        width=args.width,
        height=args.height,
        browser=args.browser,
    )


if __name__ == "__main__":
    main()
