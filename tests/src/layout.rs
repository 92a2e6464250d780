//! What the project ships, for the tests that check pages and installs.

/// Every manual page, as `man/NAME.SECTION`.
pub const MAN_PAGES: [&str; 6] = [
    "kerneld.8",
    "kerneld-modprobe.8",
    "kdstat.8",
    "kdsend.8",
    "kerneld.conf.5",
    "kerneld.7",
];
