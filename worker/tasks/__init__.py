"""Task modules. Each `register(app, runtime)` adds its tasks through `base.durable_task`."""
