"""oneDNN verbose parsing pinned on literal lines as PyTorch 2.13 (oneDNN 3.12) prints them,
an older v0 log, and broken input. Expected FLOPs and bytes are worked out by hand in comments."""

from __future__ import annotations

import gzip

import pytest

from mlgauge.errors import DataError
from mlgauge.profiler.onednn import OneDnnLogError, load_onednn_log, parse_onednn_log
from mlgauge.profiler.onednn_problem import describe_problem

HEADER = """\
onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
onednn_verbose,v1,info,gpu,runtime:none
onednn_verbose,v1,info,graph,backend,0:dnnl_backend
"""
TEMPLATE = (
    "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,"
    "memory_descriptors,attributes,auxiliary,problem_desc,exec_time\n"
    "onednn_verbose,v1,graph,info,template:operation,engine,partition_id,partition_kind,op_names,"
    "data_formats,logical_tensors,fpmath_mode,implementation,backend,exec_time\n"
)
TEMPLATE_TS = TEMPLATE.replace("template:operation", "template:timestamp,operation")
CONV = "mb2_ic16oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1"
REORDER = (
    "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:abcd::f0 "
    "dst:f32::blocked:aBcd16b::f0,attr-scratchpad:user,,2x16x28x28,1.5"
)
CONV_FWD = (
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,"
    "src:f32:a:blocked:aBcd16b::f0 wei:f32:a:blocked:ABcd16b16a::f0 bia:f32:a:blocked:a::f0 "
    f"dst:f32:a:blocked:aBcd16b::f0,attr-scratchpad:user,alg:convolution_direct,{CONV},0.2229"
)
CONV_BWD_D = (
    "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,backward_data,"
    "src:f32:a:blocked:aBcd16b::f0 wei:f32:a:blocked:ABcd16a16b::f0 bia:undef::undef::: "
    f"dst:f32:a:blocked:aBcd16b::f0,attr-scratchpad:user,alg:convolution_direct,{CONV},0.0939941"
)
CONV_BWD_W = CONV_FWD.replace("forward_training", "backward_weights").replace(",0.2229", ",8.39404")
# conv FLOPs = 2·N·OC·OH·OW·(IC/G)·KH·KW = 2·2·32·28·28·16·3·3
CONV_FLOPS = 14_450_688
# f32 elements: src 2·16·28·28 = 25088, wei 32·16·3·3 = 4608, bia 32, dst 2·32·28·28 = 50176
CONV_BYTES = (25088 + 4608 + 32 + 50176) * 4


def test_v1_rows_are_read_by_the_template():
    log = parse_onednn_log(HEADER + TEMPLATE + "\n".join([REORDER, CONV_FWD, CONV_BWD_D, CONV_BWD_W]))
    assert (log.version, log.threads, log.runtime) == ("3.12.0", 2, "OpenMP")
    assert log.isa == "Intel AVX-512 with Intel DL Boost and bfloat16 support"
    assert log.warnings == [] and log.skipped == 0
    reorder, fwd, bwd_d, bwd_w = log.primitives
    assert (reorder.line, reorder.kind, reorder.implementation, reorder.direction) == (
        8,
        "reorder",
        "jit:blk",
        "none",
    )
    assert reorder.reorder == ("abcd", "aBcd16b") and reorder.converts_format
    assert (reorder.dims, reorder.flops, reorder.bytes) == ((2, 16, 28, 28), 0, 25088 * 4 * 2)
    assert reorder.timestamp_ms is None and reorder.start_ns is None and reorder.exec_time_ms == 1.5
    assert (fwd.engine, fwd.prop_kind, fwd.direction, fwd.exec_time_ms) == (
        "cpu",
        "forward_training",
        "forward",
        0.2229,
    )
    assert [(m.name, m.dtype, m.properties, m.format_kind, m.tag, m.flags) for m in fwd.memory] == [
        ("src", "f32", "a", "blocked", "aBcd16b", "f0"),
        ("wei", "f32", "a", "blocked", "ABcd16b16a", "f0"),
        ("bia", "f32", "a", "blocked", "a", "f0"),
        ("dst", "f32", "a", "blocked", "aBcd16b", "f0"),
    ]
    assert fwd.attributes == {"scratchpad": "user"} and fwd.auxiliary == {"alg": "convolution_direct"}
    assert fwd.problem == CONV and fwd.reorder is None
    assert (fwd.shape["mb"], fwd.shape["oh"], fwd.shape["ow"], fwd.shape["g"]) == (2, 28, 28, 1)
    assert (fwd.flops, fwd.bytes) == (CONV_FLOPS, CONV_BYTES)
    assert bwd_d.direction == "backward_data" and bwd_d.memory[2].dtype == "undef"
    assert (bwd_d.flops, bwd_d.bytes) == (CONV_FLOPS, CONV_BYTES - 32 * 4)  # no bias tensor
    assert (bwd_w.direction, bwd_w.exec_time_ms) == ("backward_weights", 8.39404)


def test_timestamp_column_and_summaries():
    # ONEDNN_VERBOSE_TIMESTAMP=1 inserts ms since the epoch after the format version.
    row = (
        "onednn_verbose,v1,1795351270796.716,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,"
        "forward_training,src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB16b16a2b::f0 "
        "bia:bf16:a:blocked:a::f0 dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
        f"alg:convolution_direct,{CONV},12.093"
    )
    reorder = REORDER.replace("v1,primitive", "v1,1795351270796.565,primitive")
    log = parse_onednn_log(HEADER + TEMPLATE_TS + reorder + "\n" + row + "\n")
    first, conv = log.primitives
    assert first.start_ns == 1_795_351_270_796_565_000 and first.end_ns == first.start_ns + 1_500_000
    assert (
        conv.timestamp_ms == pytest.approx(1795351270796.716) and conv.start_ns == 1_795_351_270_796_716_000
    )
    assert conv.implementation == "brg_conv_fwd:avx512_core_bf16" and conv.memory[0].tag == "acdb"
    assert conv.bytes == CONV_BYTES // 2  # bf16: 2 bytes per element
    assert log.has_timestamps and log.total_ms == pytest.approx(13.593)
    assert {k: (b.calls, b.time_ms) for k, b in log.time_by_kind().items()} == {
        "convolution": (1, 12.093),
        "reorder": (1, 1.5),
    }
    assert list(log.time_by_direction()) == ["forward", "none"]
    assert list(log.time_by_implementation()) == [
        ("convolution", "brg_conv_fwd:avx512_core_bf16"),
        ("reorder", "jit:blk"),
    ]


def test_non_exec_rows_and_other_output_are_skipped_and_counted():
    text = "\n".join(
        [
            "epoch 1 loss 0.693",
            HEADER + TEMPLATE.rstrip(),
            "onednn_verbose,v1,primitive,create:dispatch,convolution,"
            "datatype configuration not supported on this isa,"
            "src/cpu/x64/jit_avx512_core_amx_conv_kernel.cpp:2298",
            "onednn_verbose,v1,primitive,create:cache_miss,cpu,reorder,jit:uni,undef,"
            "src:bf16::blocked:abdec::f0 dst:bf16:p:blocked:aBCde8c16b2c::f0,"
            "attr-scratchpad:user,,2x16x8x3x3,0.0571289",
            "onednn_verbose,v1,primitive,exec:check,primitive,unused primitive execution argument (80),"
            "src/common/primitive_exec_types.cpp:136",
            "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16::blocked:abdec::f0 "
            "dst:bf16:p:blocked:aBCde8c16b2c::f0,attr-scratchpad:user,,2x16x8x3x3,0.187012",
            "onednn_verbose,v1,graph,exec,cpu,1,fused,conv_relu,,,f32,gc,dnnl_backend,0.5",
            "[W] some warning printed by the program",
        ]
    )
    log = parse_onednn_log(text)
    assert log.skipped_by == {"create:dispatch": 1, "create:cache_miss": 1, "exec:check": 1, "graph": 1}
    assert log.skipped == 4 and log.malformed == 0
    (grouped,) = log.primitives  # a grouped-conv weight reorder: 5-D, g·(oc/g)·(ic/g)·kh·kw
    assert (grouped.dims, grouped.reorder, grouped.bytes) == (
        (2, 16, 8, 3, 3),
        ("abdec", "aBCde8c16b2c"),
        2304 * 2 * 2,
    )


def test_v0_log_from_older_onednn():
    text = """\
dnnl_verbose,info,oneDNN v2.7.3 (commit 6dbeffbae1f23cbbeae17adb7b5b13f1f37c080e)
dnnl_verbose,info,cpu,runtime:OpenMP,nthr:4
dnnl_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost
dnnl_verbose,info,prim_template:operation,engine,primitive,implementation,prop_kind,memory_descriptors,\
attributes,auxiliary,problem_desc,exec_time
dnnl_verbose,create:cache_miss,cpu,convolution,jit:avx512_core,backward_data,src_f32::blocked:aBcd16b:f0 \
wei_f32::blocked:ABcd16a16b:f0 bia_undef::undef::f0 dst_f32::blocked:aBcd16b:f0,,alg:convolution_direct,\
mb2_ic16oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1,0.2
dnnl_verbose,exec,cpu,convolution,jit:avx512_core,backward_data,diff_src_f32::blocked:aBcd16b:f0 \
wei_f32::blocked:ABcd16a16b:f0 bia_undef::undef::f0 diff_dst_f32::blocked:aBcd16b:f0,,alg:convolution_direct,\
mb2_ic16oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1,0.5
"""
    log = parse_onednn_log(text)
    assert (log.version, log.threads, log.isa) == ("2.7.3", 4, "Intel AVX-512 with Intel DL Boost")
    assert log.skipped_by == {"create:cache_miss": 1} and log.warnings == []
    (conv,) = log.primitives
    assert [(m.name, m.dtype, m.format_kind, m.tag, m.flags) for m in conv.memory] == [
        ("diff_src", "f32", "blocked", "aBcd16b", "f0"),
        ("wei", "f32", "blocked", "ABcd16a16b", "f0"),
        ("bia", "undef", "undef", "", "f0"),
        ("diff_dst", "f32", "blocked", "aBcd16b", "f0"),
    ]
    assert (conv.direction, conv.flops, conv.bytes, conv.exec_time_ms) == (
        "backward_data", CONV_FLOPS, CONV_BYTES - 32 * 4, 0.5)  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "problem", "flops", "shape"),
    [
        # Only h given: square, output computed: oh = (28 - 3 + 2·1)/1 + 1 = 28.
        ("convolution", "mb2_ic16oc32_ih28kh3ph1", CONV_FLOPS, {"ow": 28, "kw": 3, "pw": 1}),
        # g2, stride 2, mb4: oh = ⌊(28 - 3 + 2)/2⌋ + 1 = 14; 2·4·32·14·14·(16/2)·3·3.
        ("convolution", "g2mb4_ic16oc32_ih28kh3sh2ph1", 3_612_672, {"oh": 14, "ow": 14, "sw": 2}),
        # mb omitted defaults to 2; 3-D given by d only is cubic: 2·2·8·(8·8·8)·4·(3·3·3).
        ("convolution", "ic4oc8_id8kd3pd1", 1_769_472, {"mb": 2, "oh": 8, "kw": 3}),
        # Deconvolution mirrors conv: 2·N·IC·IH·IW·(OC/G)·KH·KW = 2·2·32·14·14·16·4·4;
        # oh = (14 − 1)·2 − 2·1 + 4 = 28.
        ("deconvolution", "mb2_ic32oc16_ih14kh4sh2ph1", 6_422_528, {"oh": 28, "ow": 28}),
        ("matmul", "6x64:64x32", 2 * 6 * 32 * 64, {"batch": 1, "m": 6, "n": 32, "k": 64}),
        ("matmul", "2x6x64:1x64x32", 2 * 2 * 6 * 32 * 64, {"batch": 2}),
        ("inner_product", "mb2ic64oc32", 2 * 2 * 32 * 64, {"mb": 2, "ic": 64, "oc": 32}),
        ("inner_product", "mb2ic64ih7oc32", 2 * 2 * 32 * 64 * 49, {"iw": 7}),
        ("reorder", "2x16x28x28", 0, {}),
        ("eltwise", "2x16x28x28", None, {}),
        ("convolution", "mb2_oc32_ih28kh3", None, {}),  # no ic: not a valid descriptor
    ],
)
def test_problem_descriptions(kind, problem, flops, shape):
    info = describe_problem(kind, problem, ())
    assert info.flops == flops
    assert shape.items() <= info.shape.items()


def test_matmul_bytes_and_binary_broadcast():
    from mlgauge.profiler.onednn import MemoryDesc

    def md(name: str, dtype: str) -> MemoryDesc:
        return MemoryDesc(name, dtype, "blocked", "ab")

    mm = describe_problem("matmul", "6x64:64x32", (md("src", "bf16"), md("wei", "bf16"), md("dst", "f32")))
    assert mm.bytes == 6 * 64 * 2 + 64 * 32 * 2 + 6 * 32 * 4
    add = describe_problem(
        "binary", "2x16x4x4:1x16x1x1", (md("src_0", "f32"), md("src_1", "f32"), md("dst", "f32"))
    )
    assert add.bytes == (512 + 16 + 512) * 4


def test_reorder_list_groups_conversions():
    forward_tags = "src:f32::blocked:abcd::f0 dst:f32::blocked:aBcd16b::f0"
    back_tags = "src:f32::blocked:aBcd16b::f0 dst:f32::blocked:abcd::f0"
    back = REORDER.replace(forward_tags, back_tags).replace(",1.5", ",0.25")
    copy = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit_direct_copy:uni,undef,src:f32::blocked:a::f0 "
            "dst:f32::blocked:a::f0,attr-scratchpad:user,,32,0.001")  # fmt: skip
    log = parse_onednn_log("\n".join([TEMPLATE, REORDER, back, REORDER, copy]))
    groups = [(g.src_tag, g.dst_tag, g.dims, g.calls, g.time_ms) for g in log.reorders()]
    assert groups == [
        ("abcd", "aBcd16b", (2, 16, 28, 28), 2, 3.0),
        ("aBcd16b", "abcd", (2, 16, 28, 28), 1, 0.25),
        ("a", "a", (32,), 1, 0.001),
    ]
    assert [p.converts_format for p in log.primitives] == [True, True, True, False]


def test_malformed_and_truncated_rows_are_counted():
    bad_time = CONV_FWD.replace(",0.2229", ",fast")
    truncated = CONV_FWD[:120]
    log = parse_onednn_log(
        "\n".join([HEADER.rstrip(), TEMPLATE.rstrip(), REORDER, bad_time, CONV_FWD, truncated])
    )
    assert len(log.primitives) == 2 and log.malformed == 2 and log.skipped_by == {"malformed": 2}
    assert log.warnings == ["2 malformed or truncated exec row(s) skipped; the first is line 9"]


def test_newer_major_version_warns_and_parses():
    text = (HEADER + TEMPLATE).replace("oneDNN v3.12.0", "oneDNN v9.0.1") + CONV_FWD
    log = parse_onednn_log(text)
    assert log.version == "9.0.1" and log.primitives[0].flops == CONV_FLOPS
    assert log.warnings == [
        "oneDNN v9.0 is newer than the versions this parser knows (3.x); fields may be misread"
    ]


def test_missing_header_is_tolerated_with_warnings():
    log = parse_onednn_log(CONV_FWD)
    assert log.version is None and log.primitives[0].flops == CONV_FLOPS
    assert len(log.warnings) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no oneDNN verbose lines found"),
        ("training step 1\nloss 0.5\n", "no oneDNN verbose lines found"),
        (HEADER + TEMPLATE, "the log has 7 oneDNN lines but no primitive executions"),
        (TEMPLATE + CONV_FWD[:90], "every exec row is malformed; the first is line 3"),
    ],
)
def test_nothing_to_analyze_is_a_clear_error(text, message):
    with pytest.raises(OneDnnLogError) as err:
        parse_onednn_log(text, source="run.log")
    assert isinstance(err.value, DataError) and err.value.message == message
    assert err.value.hint and err.value.context == {"source": "run.log"}


def test_load_plain_and_gzip(tmp_path):
    text = HEADER + TEMPLATE + CONV_FWD + "\n"
    (tmp_path / "v.log").write_text(text)
    (tmp_path / "v.log.gz").write_bytes(gzip.compress(text.encode()))
    plain, packed = load_onednn_log(tmp_path / "v.log"), load_onednn_log(tmp_path / "v.log.gz")
    assert plain.primitives == packed.primitives and plain.primitives[0].flops == CONV_FLOPS
    with pytest.raises(OneDnnLogError, match="cannot read"):
        load_onednn_log(tmp_path / "absent.log")
