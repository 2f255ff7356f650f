//! The security console's services: what the console decides, without web types. Its pages
//! are in `http/console`.

pub mod workforce;
