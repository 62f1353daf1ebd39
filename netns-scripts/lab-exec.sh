#!/bin/sh
# siprace lab exec: see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" exec "$@"
