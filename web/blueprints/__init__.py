"""One blueprint per resource; each module exports `bp`."""
