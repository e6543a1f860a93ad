"""Starting a process safely: refusing unsafe production settings (`safety`), serving until
SIGTERM with "listening on" said only when it is true (`serving`), and several API processes on
one port (`forking`)."""
