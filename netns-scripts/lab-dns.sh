#!/bin/sh
# siprace lab dns: the lab DNS server in the foreground; see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" dns "$@"
