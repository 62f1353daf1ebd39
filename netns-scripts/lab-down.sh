#!/bin/sh
# siprace lab down: see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" down "$@"
