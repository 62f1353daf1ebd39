#!/bin/sh
# siprace lab up: see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" up "$@"
