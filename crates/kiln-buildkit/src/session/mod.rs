//! The client's session: services the client serves to kiln over the tunnelled connection.

pub mod filesync;
