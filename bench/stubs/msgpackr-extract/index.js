// msgpackr wraps require("msgpackr-extract") in try/catch and falls back to plain JS.
throw new Error("msgpackr-extract is stubbed out in bench/ (see package.json)")
