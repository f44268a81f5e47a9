#!/bin/sh
# Hotplug script for devices a userspace backend serves: nothing to attach, so succeed.
echo "hotplug-noop $* XENBUS_PATH=$XENBUS_PATH" >> /run/hotplug-noop.log
exit 0
