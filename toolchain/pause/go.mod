module hubnode/toolchain/pause

go 1.24.0
