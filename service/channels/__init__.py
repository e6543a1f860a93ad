"""The shell side of each channel: how a request becomes that channel's event, and which provider
calls it needs. `registry.CHANNELS` registers one object per `Channel`, as `machines.channels`
registers the machines, so that the routes never branch on the channel."""
