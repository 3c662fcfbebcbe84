"""The web console's figures and files: what ``GET /ui`` shows, computed from the server's own records and
metrics, and the page, script and styles it is drawn with (shipped in the package: no build step, no CDN)."""
