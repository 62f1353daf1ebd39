#!/bin/sh
# siprace lab serve: start the lab DNS, responder, SIPp, Kamailio; see netns-scripts/README.md
exec "$(dirname "$0")/_siprace.sh" serve "$@"
