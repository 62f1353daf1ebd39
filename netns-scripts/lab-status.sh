#!/bin/sh
# siprace lab status: see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" status "$@"
