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
  const auto text_blocks = [&](const std::string& path) {
    const auto tok = tokenizer::load_tokenizer(tokenizer_dir);
    tokenizer::check_fits_model(*tok, tokenizer_dir, mc.vocab_size, cfg.model.teacher);
    return std::make_shared<PackedBlocks>(tokenize_documents(read_documents(path), *tok),
                                          PackOptions{d.seq_len, tok->bos_id(), tok->eos_id()});
  };
  if (d.source == "text") return text_blocks(d.path);
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
  auto blocks = std::make_shared<PackedBlocks>(std::move(ds), pack);
  if (d.mix_fraction > 0) {
    const int64_t want = mixed_text_blocks(blocks->num_blocks(), d.mix_fraction);
    auto text = text_blocks(d.mix_text);
    OB_CHECK(want <= text->num_blocks(), "data.mix_text: ", d.mix_text, " gives ", text->num_blocks(), " blocks of ",
             d.seq_len, " tokens, fewer than the ", want, " that data.mix_fraction=", d.mix_fraction, " needs beside ",
             blocks->num_blocks(), " blocks of ", dir);
    blocks->mix_in(std::move(text), want);
  }
  return blocks;
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
