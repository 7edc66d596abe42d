"""mailx-relay's front end: the s-nail compatible `mail` command and `mail-alias`."""
