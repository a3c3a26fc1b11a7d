#include "onebit/data/training_data.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "onebit/core/error.h"
#include "onebit/data/self_sample.h"
#include "onebit/tokenizer/tokenizer.h"

namespace onebit::data {
namespace {
std::string read_recipe(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  OB_CHECK(f.good(), "cannot read ", p.string());
  const auto js = nlohmann::json::parse(f, nullptr, false);
  OB_CHECK(!js.is_discarded() && js.contains("settings"), p.string(), " is corrupt (no settings)");
  return js["settings"].dump();
}
}  // namespace

std::shared_ptr<const PackedBlocks> training_blocks(const config::TrainConfig& cfg, models::CausalLMImpl& teacher,
                                                    const std::string& tokenizer_dir, bool progress,
                                                    const SampleRanks& ranks) {
  const auto& mc = teacher.config();
  const PackOptions pack{cfg.data.seq_len, mc.bos_token_id, mc.eos_token_id};
  const auto& d = cfg.data;
  if (d.source == "text") {
    const auto tok = tokenizer::load_tokenizer(tokenizer_dir);
    tokenizer::check_fits_model(*tok, tokenizer_dir, mc.vocab_size, cfg.model.teacher);
    return std::make_shared<const PackedBlocks>(tokenize_documents(read_documents(d.path), *tok),
                                                PackOptions{d.seq_len, tok->bos_id(), tok->eos_id()});
  }
  std::string dir = d.path;
  if (d.source == "sample") {
    dir = d.sample_dir.empty() ? (std::filesystem::path(cfg.output_dir) / "samples").string() : d.sample_dir;
    SampleOptions o;
    o.sampling = d.sample;
    o.seed = d.seed;
    o.progress = progress;
    o.ranks = ranks;
    o.provenance = {{"model", cfg.model.teacher}, {"dtype", cfg.model.dtype}};
    // A teacher the project trained itself (the quickstart's) is rebuilt in the same folder
    // when its recipe changes; the recipe, not the path, tells its samples apart.
    const auto recipe = std::filesystem::path(tokenizer_dir) / "embedded.json";
    if (std::filesystem::exists(recipe)) o.provenance["teacher_recipe"] = read_recipe(recipe);
    self_sample(teacher, dir, o);
  }
  TokenDataset ds = TokenDataset::open(dir);
  OB_CHECK(ds.vocab_size() <= mc.vocab_size, dir, ": dataset vocab size ", ds.vocab_size(),
           " does not fit the teacher's ", mc.vocab_size, " (sampled from another model?)");
  return std::make_shared<const PackedBlocks>(std::move(ds), pack);
}

BatchOptions batch_options(const config::TrainConfig& cfg, int64_t rank, int64_t world_size) {
  BatchOptions b;
  b.batch_size = cfg.data.batch_size;
  b.seed = cfg.data.seed;
  b.rank = rank;
  b.world_size = world_size;
  return b;
}

}  // namespace onebit::data
