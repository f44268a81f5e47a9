// Blkif: work in progress; see ../shared/DESIGN.md.
