// Filesystem helpers that are safe to use next to the torch wheel's libtorch.so.
#pragma once
#include <filesystem>

namespace onebit::util {

// Deletes `path` and everything below it (no error when absent; symlinks are not followed).
// Use this, never std::filesystem::remove_all: the PyPI torch wheel's libtorch.so exports its
// own remove_all, built against a newer libstdc++, which crashes when it wins symbol resolution.
void remove_tree(const std::filesystem::path& path);

}  // namespace onebit::util
