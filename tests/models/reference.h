// Shared by the [models] tests: the transformers reference models made by
// tests/python/make_reference_models.py, generated once per script content in the build folder.
#pragma once
#include <torch/types.h>

#include <filesystem>
#include <string>

#include "tests/references.h"

namespace onebit::test {

// Folder holding <family>/{config.json, model.safetensors, reference.safetensors}, or empty
// when Python cannot import transformers (tests then skip).
std::filesystem::path reference_models();

// A fresh empty folder under the build folder for one test.
std::filesystem::path scratch_dir(const std::string& name);

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace onebit::test

#define OB_REFS_OR_SKIP(var)                                    \
  const std::filesystem::path var = ::onebit::test::reference_models(); \
  OB_REFERENCE_OR_SKIP(!var.empty(), "needs Python with transformers (" + ::onebit::test::python() + ")")
