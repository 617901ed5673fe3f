"""What every stage leans on, none of it a stage:

- `errors`: the one-line errors a command exits with (bad input named by file and line, a
  server that refuses, a disk without room);
- `watchdog`: library calls that stop making progress fail instead of hanging;
- `crash_points`: where tests of resumption stop a process, exactly, before they kill it;
- `download`: one file over HTTP(S), resumable, accepted only with its sha256;
- `checksums`: a file's digest (sha256, md5), read in blocks;
- `retry_after`: the wait an HTTP 429 answer asks for;
- `versions`: library versions for provenance records.
"""
