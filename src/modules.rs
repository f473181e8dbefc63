//! Phase "modules": coldplug kernel modules from /lib/modules/$(uname -r) by modalias (owned by the net/modules work).
