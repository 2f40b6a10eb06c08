#!/usr/bin/env python3
"""Tiny random-weight stand-ins for real ONNX exports, with the real folder layout and the real
input/output names, ranks and dtypes, so the loading and sampling code is tested on ONNX Runtime
without downloading a model.

    python3 scripts/make-fixtures.py            # writes tests/fixtures/onnx/

Outputs (deterministic: numpy seed 0):
  sd-tiny/    SD 1.x / SD-Turbo layout as optimum writes it: int32 input_ids, int64 timestep,
              Euler scheduler with trailing spacing, fp32; vae_encoder/ (latent_parameters)
              for the encode stage's VAE tokenizer.
  clip-tiny/  CLIP as `optimum-cli export onnx` writes CLIPModel: one model.onnx with
              input_ids, attention_mask, pixel_values → logits_per_image, logits_per_text,
              text_embeds, image_embeds; tokenizer files and preprocessor_config.json (32 px crop);
              plus expected.json: cosines for sample images computed here with PIL's bicubic
              resize and HF tokenizers, the reference the Rust scorer must reproduce.
  t5-tiny/    a T5 encoder as optimum exports T5EncoderModel: model.onnx (input_ids,
              attention_mask → last_hidden_state) and a sentencepiece-style Unigram
              tokenizer.json; expected.json holds ids and features computed here.
  sdxl-tiny/  SDXL layout: two tokenizers (the second pads with "!") and text encoders with
              hidden_states.N outputs and text_embeds, text_embeds/time_ids UNet inputs,
              float timestep, fp16 UNet and VAE inputs/outputs, Euler-ancestral scheduler.
Needs: pip install onnx numpy onnxruntime pillow tokenizers
"""
import json
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_bpe import bytes_to_unicode  # noqa: E402

OPSET = 17
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
rng = np.random.default_rng(0)


# A few real-looking merges so BPE does real work on the test prompts.
MERGES = [("r", "e</w>"), ("c", "i"), ("ci", "r"), ("cir", "c"), ("l", "e</w>"), ("circ", "le</w>"),
          ("s", "q"), ("sq", "u"), ("a", "r"), ("b", "l"), ("bl", "u"), ("blu", "e</w>"), ("o", "f</w>"),
          ("t", "h"), ("th", "re</w>"), ("a", "n"), ("an", "d</w>")]


def write_tokenizer(path, pad):
    os.makedirs(path, exist_ok=True)
    chars = bytes_to_unicode()
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(path, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
        for a, b in MERGES:
            f.write(f"{a} {b}\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad}
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(special, f)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer", **special}, f)
    return len(vocab)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def w(*shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save(graph, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lightgen-fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def text_encoder(path, vocab, dim, hidden_states, pooled, projection=None):
    """CLIP text tower stand-in: embedding + 2 tanh layers; real output names."""
    n = [
        helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["tok_emb", "ids64"], ["e"]),
        helper.make_node("Add", ["e", "pos_emb"], ["h0"]),
        helper.make_node("MatMul", ["h0", "w1"], ["m1"]),
        helper.make_node("Tanh", ["m1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "w2"], ["m2"]),
        helper.make_node("Tanh", ["m2"], ["last_hidden_state"]),
        helper.make_node("ReduceMean", ["last_hidden_state"], ["pool"], axes=[1], keepdims=0),
    ]
    inits = [init("tok_emb", w(vocab, dim, scale=1.0)), init("pos_emb", w(77, dim)), init("w1", w(dim, dim)),
             init("w2", w(dim, dim))]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch_size", "sequence_length", dim])]
    if pooled:
        n.append(helper.make_node("Identity", ["pool"], ["pooler_output"]))
        outs.append(helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch_size", dim]))
    if projection:
        n.append(helper.make_node("MatMul", ["pool", "proj"], ["text_embeds"]))
        inits.append(init("proj", w(dim, projection)))
        outs.insert(0, helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch_size", projection]))
    if hidden_states:
        for i, src in enumerate(["h0", "h1", "last_hidden_state"]):
            n.append(helper.make_node("Identity", [src], [f"hidden_states.{i}"]))
            outs.append(helper.make_tensor_value_info(f"hidden_states.{i}", TensorProto.FLOAT, ["batch_size", "sequence_length", dim]))
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch_size", "sequence_length"])]
    save(helper.make_graph(n, "text_encoder", ins, outs, inits), path)


def unet(path, ctx_dim, xl, timestep_type, io_type):
    """UNet stand-in: out = sample + 0.3·tanh(0.1·conv1x1(sample) + text + time (+ pooled + time ids))."""
    f16 = io_type == TensorProto.FLOAT16
    n, inits = [], []
    src = lambda name: name + "_f" if f16 else name
    if f16:
        for name in ["sample", "encoder_hidden_states"] + (["text_embeds", "time_ids"] if xl else []):
            n.append(helper.make_node("Cast", [name], [name + "_f"], to=TensorProto.FLOAT))
    n += [
        helper.make_node("Conv", [src("sample"), "wx"], ["cx"]),
        helper.make_node("Mul", ["cx", "tenth"], ["sx"]),
        helper.make_node("ReduceMean", [src("encoder_hidden_states")], ["ctx"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["ctx", "wc"], ["c4"]),
        helper.make_node("Unsqueeze", ["c4", "axes23"], ["c"]),
        helper.make_node("Cast", ["timestep"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["tf", "milli"], ["ts"]),
        helper.make_node("Reshape", ["ts", "shape_t"], ["t"]),
        helper.make_node("Add", ["sx", "c"], ["a1"]),
        helper.make_node("Add", ["a1", "t"], ["a2"]),
    ]
    inits += [init("wx", w(4, 4, 1, 1)), init("tenth", np.float32(0.1)),
              init("wc", w(ctx_dim, 4)), init("axes23", np.array([2, 3], dtype=np.int64)), init("milli", np.float32(0.001)),
              init("shape_t", np.array([-1, 1, 1, 1], dtype=np.int64))]
    last = "a2"
    if xl:
        n += [
            helper.make_node("MatMul", [src("text_embeds"), "wp"], ["p4"]),
            helper.make_node("Unsqueeze", ["p4", "axes23"], ["p"]),
            helper.make_node("MatMul", [src("time_ids"), "wt"], ["q4"]),
            helper.make_node("Mul", ["q4", "milli"], ["q4s"]),
            helper.make_node("Unsqueeze", ["q4s", "axes23"], ["q"]),
            helper.make_node("Add", ["a2", "p"], ["a3"]),
            helper.make_node("Add", ["a3", "q"], ["a4"]),
        ]
        inits += [init("wp", w(16, 4)), init("wt", w(6, 4))]
        last = "a4"
    # A denoiser for latents concentrated at 0: ε ≈ the (scaled) input, plus a conditioned term.
    n += [
        helper.make_node("Tanh", [last], ["th"]),
        helper.make_node("Mul", ["th", "cond_gain"], ["g"]),
        helper.make_node("Add", [src("sample"), "g"], ["out_f" if f16 else "out_sample"]),
    ]
    inits.append(init("cond_gain", np.float32(0.3)))
    if f16:
        n.append(helper.make_node("Cast", ["out_f"], ["out_sample"], to=TensorProto.FLOAT16))
    ins = [
        helper.make_tensor_value_info("sample", io_type, ["batch_size", 4, "height", "width"]),
        helper.make_tensor_value_info("timestep", timestep_type, ["steps"]),
        helper.make_tensor_value_info("encoder_hidden_states", io_type, ["batch_size", "sequence_length", ctx_dim]),
    ]
    if xl:
        ins += [helper.make_tensor_value_info("text_embeds", io_type, ["batch_size", 16]),
                helper.make_tensor_value_info("time_ids", io_type, ["batch_size", 6])]
    outs = [helper.make_tensor_value_info("out_sample", io_type, ["batch_size", 4, "height", "width"])]
    save(helper.make_graph(n, "unet", ins, outs, inits), path)


def vae_decoder(path, io_type):
    """VAE decoder stand-in: 1x1 conv to RGB (small weights: the stand-in UNet leaves latents
    at the noise scale), ×8 nearest upsampling, tanh into [-1, 1]."""
    f16 = io_type == TensorProto.FLOAT16
    n = []
    x = "latent_sample"
    if f16:
        n.append(helper.make_node("Cast", [x], ["z"], to=TensorProto.FLOAT))
        x = "z"
    n += [
        helper.make_node("Conv", [x, "wv", "bv"], ["rgb"]),
        helper.make_node("Resize", ["rgb", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Tanh", ["up"], ["img_f" if f16 else "sample"]),
    ]
    if f16:
        n.append(helper.make_node("Cast", ["img_f"], ["sample"], to=TensorProto.FLOAT16))
    inits = [init("wv", w(3, 4, 1, 1, scale=0.03)), init("bv", w(3, scale=0.1)),
             init("scales", np.array([1, 1, 8, 8], dtype=np.float32))]
    ins = [helper.make_tensor_value_info("latent_sample", io_type, ["batch_size", 4, "latent_height", "latent_width"])]
    outs = [helper.make_tensor_value_info("sample", io_type, ["batch_size", 3, "height", "width"])]
    save(helper.make_graph(n, "vae_decoder", ins, outs, inits), path)


def vae_encoder(path):
    """VAE encoder stand-in: an 8x8 stride-8 conv to the posterior moments (4 means, 4
    log-variances), output `latent_parameters` as optimum names it."""
    n = [helper.make_node("Conv", ["sample", "we", "be"], ["latent_parameters"], strides=[8, 8])]
    inits = [init("we", w(8, 3, 8, 8, scale=0.05)), init("be", np.array([0, 0, 0, 0, -2, -2, -2, -2], dtype=np.float32))]
    ins = [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch_size", 3, "height", "width"])]
    outs = [helper.make_tensor_value_info("latent_parameters", TensorProto.FLOAT, ["batch_size", 8, "latent_height", "latent_width"])]
    save(helper.make_graph(n, "vae_encoder", ins, outs, inits), path)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def scheduler(root, cls, spacing):
    write_json(os.path.join(root, "scheduler", "scheduler_config.json"), {
        "_class_name": cls, "_diffusers_version": "0.30.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
        "timestep_spacing": spacing, "set_alpha_to_one": False, "clip_sample": False,
    })


def vae_config(root):
    write_json(os.path.join(root, "vae_decoder", "config.json"), {
        "_class_name": "AutoencoderKL", "block_out_channels": [8, 8, 8, 8], "latent_channels": 4, "scaling_factor": 0.18215,
    })


def sd_tiny(root):
    vocab = write_tokenizer(os.path.join(root, "tokenizer"), "<|endoftext|>")
    text_encoder(os.path.join(root, "text_encoder", "model.onnx"), vocab, 32, hidden_states=False, pooled=True)
    unet(os.path.join(root, "unet", "model.onnx"), 32, xl=False, timestep_type=TensorProto.INT64, io_type=TensorProto.FLOAT)
    vae_decoder(os.path.join(root, "vae_decoder", "model.onnx"), TensorProto.FLOAT)
    vae_config(root)
    scheduler(root, "EulerDiscreteScheduler", "trailing")
    vae_encoder(os.path.join(root, "vae_encoder", "model.onnx"))
    write_json(os.path.join(root, "vae_encoder", "config.json"), {
        "_class_name": "AutoencoderKL", "block_out_channels": [8, 8, 8, 8], "latent_channels": 4, "scaling_factor": 0.18215,
    })
    write_json(os.path.join(root, "model_index.json"), {
        "_class_name": "ORTStableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["optimum", "ORTModelTextEncoder"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["optimum", "ORTModelUnet"],
        "vae_decoder": ["optimum", "ORTModelVaeDecoder"], "vae_encoder": ["optimum", "ORTModelVaeEncoder"],
        "requires_safety_checker": False,
    })


def sdxl_tiny(root):
    v1 = write_tokenizer(os.path.join(root, "tokenizer"), "<|endoftext|>")
    v2 = write_tokenizer(os.path.join(root, "tokenizer_2"), "!")
    text_encoder(os.path.join(root, "text_encoder", "model.onnx"), v1, 32, hidden_states=True, pooled=True)
    text_encoder(os.path.join(root, "text_encoder_2", "model.onnx"), v2, 48, hidden_states=True, pooled=False, projection=16)
    unet(os.path.join(root, "unet", "model.onnx"), 80, xl=True, timestep_type=TensorProto.FLOAT, io_type=TensorProto.FLOAT16)
    vae_decoder(os.path.join(root, "vae_decoder", "model.onnx"), TensorProto.FLOAT16)
    vae_config(root)
    scheduler(root, "EulerAncestralDiscreteScheduler", "trailing")
    write_json(os.path.join(root, "model_index.json"), {
        "_class_name": "ORTStableDiffusionXLPipeline", "_diffusers_version": "0.30.0",
        "force_zeros_for_empty_prompt": True, "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["optimum", "ORTModelTextEncoder"], "text_encoder_2": ["optimum", "ORTModelTextEncoder"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["optimum", "ORTModelUnet"], "vae_decoder": ["optimum", "ORTModelVaeDecoder"],
    })


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def clip_model(path, vocab, crop):
    """CLIPModel stand-in: mean-pooled token embeddings and a strided conv, projected to 16 and
    L2-normalised; logits = 100 · cosine."""
    n = [
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "axes1"], ["sum"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axes1"], ["cnt"], keepdims=0),
        helper.make_node("Div", ["sum", "cnt"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "wt"], ["tp"]),
        helper.make_node("LpNormalization", ["tp"], ["text_embeds"], axis=-1, p=2),
        helper.make_node("Conv", ["pixel_values", "wc"], ["c"], strides=[8, 8]),
        helper.make_node("Tanh", ["c"], ["ct"]),
        helper.make_node("Flatten", ["ct"], ["cf"], axis=1),
        helper.make_node("MatMul", ["cf", "wi"], ["ip"]),
        helper.make_node("LpNormalization", ["ip"], ["image_embeds"], axis=-1, p=2),
        helper.make_node("Transpose", ["text_embeds"], ["tt"], perm=[1, 0]),
        helper.make_node("MatMul", ["image_embeds", "tt"], ["cos"]),
        helper.make_node("Mul", ["cos", "scale"], ["logits_per_image"]),
        helper.make_node("Transpose", ["logits_per_image"], ["logits_per_text"], perm=[1, 0]),
    ]
    cells = (crop // 8) ** 2 * 8
    inits = [init("tok_emb", w(vocab, 24, scale=1.0)), init("wt", w(24, 16)), init("wc", w(8, 3, 8, 8, scale=0.2)),
             init("wi", w(cells, 16)), init("scale", np.float32(100.0)),
             init("axes1", np.array([1], dtype=np.int64)), init("axes2", np.array([2], dtype=np.int64))]
    ins = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["text_batch_size", "sequence_length"]),
        helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["image_batch_size", 3, crop, crop]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["text_batch_size", "sequence_length"]),
    ]
    outs = [
        helper.make_tensor_value_info("logits_per_image", TensorProto.FLOAT, ["image_batch_size", "text_batch_size"]),
        helper.make_tensor_value_info("logits_per_text", TensorProto.FLOAT, ["text_batch_size", "image_batch_size"]),
        helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["text_batch_size", 16]),
        helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["image_batch_size", 16]),
    ]
    save(helper.make_graph(n, "clip", ins, outs, inits), path)


def hf_clip_tokenizer(root):
    """The fast tokenizer transformers builds from CLIP's vocab.json + merges.txt."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    vocab = json.load(open(os.path.join(root, "vocab.json")))
    merges = [tuple(l.split()) for l in open(os.path.join(root, "merges.txt")).read().splitlines()[1:] if l]
    tok = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                               fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok, vocab


def clip_reference(root, crop):
    """Cosines the Rust scorer must reproduce: PIL bicubic + centre crop, HF tokenization."""
    import onnxruntime as ort
    from PIL import Image
    tok, vocab = hf_clip_tokenizer(root)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    sess = ort.InferenceSession(os.path.join(root, "model.onnx"))
    cases = []
    for k, (wd, ht, text) in enumerate([(64, 48, "a blue circle"), (40, 72, "three red squares and a circle"),
                                        (32, 32, "A  Blue   CIRCLE!"), (100, 60, "the sq of three")]):
        y, x = np.mgrid[0:ht, 0:wd]
        rgb = np.stack([(x * 255 // wd), (y * 255 // ht), ((x * y + 37 * k) % 256)], -1).astype(np.uint8)
        name = f"image-{k}.png"
        Image.fromarray(rgb).save(os.path.join(root, "samples", name))
        im = Image.open(os.path.join(root, "samples", name)).convert("RGB")
        short = min(im.size)
        nw, nh = (crop, crop * im.size[1] // im.size[0]) if im.size[0] <= im.size[1] else (crop * im.size[0] // im.size[1], crop)
        if (nw, nh) != im.size:
            im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - crop) // 2, (nh - crop) // 2
        cropped = im.crop((left, top, left + crop, top + crop))
        cropped.save(os.path.join(root, "samples", f"crop-{k}.png"))
        arr = np.asarray(cropped, dtype=np.float32) / 255.0
        arr = ((arr - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)[None].astype(np.float32)
        body = tok.encode(text, add_special_tokens=False).ids[:75]
        ids = [bos] + body + [eos]
        mask = [1] * len(ids) + [0] * (77 - len(ids))
        ids = ids + [eos] * (77 - len(ids))
        out = sess.run(["text_embeds", "image_embeds"], {"input_ids": np.array([ids], dtype=np.int64),
                       "attention_mask": np.array([mask], dtype=np.int64), "pixel_values": arr})
        cases.append({"image": f"samples/{name}", "crop": f"samples/crop-{k}.png", "prompt": text, "ids": ids, "cosine": float((out[0] * out[1]).sum())})
    write_json(os.path.join(root, "expected.json"), {"preprocessing": "PIL bicubic, centre crop", "cases": cases})


def clip_tiny(root):
    os.makedirs(os.path.join(root, "samples"), exist_ok=True)
    vocab = write_tokenizer(root, "<|endoftext|>")
    crop = 32
    clip_model(os.path.join(root, "model.onnx"), vocab, crop)
    write_json(os.path.join(root, "preprocessor_config.json"), {
        "crop_size": {"height": crop, "width": crop}, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3, "size": {"shortest_edge": crop},
        "image_processor_type": "CLIPImageProcessor",
    })
    write_json(os.path.join(root, "config.json"), {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 16})
    clip_reference(root, crop)


T5_WORDS = ["a", "red", "blue", "green", "circle", "square", "star", "three", "two", "of", "and", "the", "photo", "on",
            "left", "right", "small", "big", "s", "e", "r", "c", "l", "o", "t", "i", "n", "d", "u", "p", "h", "g", "b"]


def t5_tiny(root):
    """T5 encoder stand-in: token embeddings masked, one tanh layer; real port names."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    import onnxruntime as ort
    os.makedirs(root, exist_ok=True)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    for i, word in enumerate(T5_WORDS):
        vocab.append(("\u2581" + word, -1.0 - 0.1 * i))
        vocab.append((word, -5.0 - 0.1 * i))
    vocab.append(("\u2581", -3.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(" {2,}", " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(os.path.join(root, "tokenizer.json"))
    write_json(os.path.join(root, "tokenizer_config.json"), {"model_max_length": 512, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    write_json(os.path.join(root, "config.json"), {"architectures": ["T5EncoderModel"], "d_model": 16, "model_type": "t5"})
    dim = 16
    n = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("MatMul", ["em", "w"], ["h"]),
        helper.make_node("Tanh", ["h"], ["last_hidden_state"]),
    ]
    inits = [init("emb", w(len(vocab), dim, scale=1.0)), init("w", w(dim, dim)), init("axes2", np.array([2], dtype=np.int64))]
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "encoder_sequence_length"]),
           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "encoder_sequence_length"])]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch_size", "encoder_sequence_length", dim])]
    save(helper.make_graph(n, "t5_encoder", ins, outs, inits), os.path.join(root, "model.onnx"))
    sess = ort.InferenceSession(os.path.join(root, "model.onnx"))
    cases = []
    for text in ["a red circle", "Three  BLUE squares on the left of a star", "a zebra"]:
        ids = tok.encode(text).ids
        out = sess.run(["last_hidden_state"], {"input_ids": np.array([ids], dtype=np.int64),
                                               "attention_mask": np.ones((1, len(ids)), dtype=np.int64)})[0][0]
        cases.append({"prompt": text, "ids": ids, "features": [round(float(x), 6) for x in out.reshape(-1)]})
    write_json(os.path.join(root, "expected.json"), {"dim": dim, "cases": cases})


def main():
    out = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else ROOT)
    for name, make in [("sd-tiny", sd_tiny), ("sdxl-tiny", sdxl_tiny), ("clip-tiny", clip_tiny), ("t5-tiny", t5_tiny)]:
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        make(d)
        print("wrote", d)


if __name__ == "__main__":
    main()
