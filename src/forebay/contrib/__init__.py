"""Ready-made pipelines built on forebay's public API (sources, handlers, sinks)."""
