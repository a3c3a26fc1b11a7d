// modeling_onebit.py: the transformers model code onebit-export writes into every export, so
// that AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True) loads the folder.
#pragma once
#include <string>

namespace onebit::packed {

constexpr const char* kModelingModule = "modeling_onebit";
constexpr const char* kModelingClass = "OneBitForCausalLM";
const std::string& modeling_onebit_py();  // the file's text

}  // namespace onebit::packed
