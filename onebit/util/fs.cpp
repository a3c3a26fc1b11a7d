#include "onebit/util/fs.h"

#include <ftw.h>

#include <cstdio>

namespace onebit::util {

void remove_tree(const std::filesystem::path& path) {
  // Depth-first, physical walk: files and folders are removed bottom-up, links not followed.
  ::nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return std::remove(p); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

}  // namespace onebit::util
