"""One module per DVC stage; each imports contracts, vision and modeling, never another stage."""
