#!/usr/bin/env bash
# Runs pytest and turns its exit code 5 ("no tests collected") into a failure with a message,
# so a broken collection can never pass as green.
"$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$code"
