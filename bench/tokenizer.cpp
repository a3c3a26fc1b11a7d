// Tokenizer throughput: encodes a text file story by story (blank-line separated, as a data
// pipeline would) with load_tokenizer(model_dir), twice on the same tokenizer. The baseline is
// the first (cold) pass; the second pass shows what the BPE word cache buys. Also times decode.
//
//   bench-tokenizer --model ../shared/models/stories260K --text ../shared/data/tinystories_val.txt
#include "onebit/tokenizer/tokenizer.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "onebit/core/error.h"
#include "onebit/io/safetensors.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  return onebit::guarded_main("bench-tokenizer", [&] {
    CLI::App app{"Tokenizer encode/decode throughput (MB/s of UTF-8 text)"};
    std::string model, text_path;
    app.add_option("--model", model, "model folder with tokenizer.json or tokenizer.model")
        ->required();
    app.add_option("--text", text_path, "UTF-8 text file; stories separated by blank lines")
        ->required();
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    const std::string text = onebit::io::read_file(text_path);
    std::vector<std::string> docs;
    for (size_t p = 0; p < text.size();) {
      size_t q = text.find("\n\n", p);
      if (q == std::string::npos) q = text.size();
      if (q > p) docs.push_back(text.substr(p, q - p));
      p = q + 2;
    }
    const double mb = double(text.size()) / 1e6;

    auto t0 = std::chrono::steady_clock::now();
    auto tok = onebit::tokenizer::load_tokenizer(model);
    const double load_s = seconds_since(t0);

    std::vector<std::vector<int64_t>> ids(docs.size());
    double pass_s[2];
    size_t n_tokens = 0;
    for (int pass = 0; pass < 2; ++pass) {
      t0 = std::chrono::steady_clock::now();
      n_tokens = 0;
      for (size_t i = 0; i < docs.size(); ++i) {
        ids[i] = tok->encode(docs[i]);
        n_tokens += ids[i].size();
      }
      pass_s[pass] = seconds_since(t0);
    }
    t0 = std::chrono::steady_clock::now();
    size_t out_bytes = 0;
    for (const auto& d : ids) out_bytes += tok->decode(d).size();
    const double dec_s = seconds_since(t0);

    std::printf("text: %s (%.3f MB, %zu stories), tokens: %zu (%.2f bytes/token)\n",
                text_path.c_str(), mb, docs.size(), n_tokens, double(text.size()) / n_tokens);
    std::printf("load:            %8.3f s\n", load_s);
    std::printf("encode (cold):   %8.2f MB/s   (baseline)\n", mb / pass_s[0]);
    std::printf("encode (warm):   %8.2f MB/s   x%.2f vs cold\n", mb / pass_s[1],
                pass_s[0] / pass_s[1]);
    std::printf("decode:          %8.2f MB/s   (%zu bytes out)\n", mb / dec_s, out_bytes);
    return 0;
  });
}
