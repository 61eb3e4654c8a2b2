//! Adoption: a running container archipelago did not create becomes an app's container
//! without a restart, when it matches what the app's manifest would create.
