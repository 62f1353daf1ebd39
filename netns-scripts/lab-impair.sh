#!/bin/sh
# siprace lab impair: see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" impair "$@"
