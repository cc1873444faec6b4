"""Request-log templates (CONTRACT.md §2.10): a Go text/template subset with Go's printing rules."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.requestlog import (
    DEFAULT_REQUEST_LOG_TEMPLATE,
    RequestLogInput,
    RequestLogRevision,
    RequestLogTemplate,
    canonical_header_key,
    go_float,
    js_escape,
)
from sluice.local.data import KNATIVE_DIR

OBSERVABILITY_YAML = KNATIVE_DIR / "configmaps/observability.yaml"  # the packaged copy

REV = RequestLogRevision(
    name="hello-00001",
    namespace="default",
    service="hello",
    configuration="hello",
    pod_name="hello-00001-deployment-abc",
    pod_ip="10.0.0.7",
)


def make_input(**kw: object) -> RequestLogInput:
    base: dict[str, object] = {
        "method": "GET",
        "request_uri": "/path?q=1",
        "proto": "HTTP/1.1",
        "host": "hello.default.example.com",
        "remote_addr": "10.0.0.1:4567",
        "content_length": 0,
        "headers": [("User-Agent", "curl/8.0"), ("Referer", "http://r/"), ("Host", "ignored")],
        "code": 200,
        "size": 5,
        "latency": 0.0123,
        "revision": REV,
    }
    base.update(kw)
    return RequestLogInput(**base)  # type: ignore[arg-type]


def render(template: str, **kw: object) -> str:
    return RequestLogTemplate.parse(template).render(make_input(**kw))


# --------------------------------------------------------------------------- default template


def test_default_template_matches_knative_configmap() -> None:
    cm = yaml.safe_load(OBSERVABILITY_YAML.read_text())
    example = yaml.safe_load(cm["data"]["_example"])
    assert example["logging.request-log-template"] == DEFAULT_REQUEST_LOG_TEMPLATE


def test_default_template_renders_knative_line() -> None:
    line = RequestLogTemplate.parse(DEFAULT_REQUEST_LOG_TEMPLATE).render(
        make_input(headers=[("user-agent", "curl/8.0"), ("traceparent", "00-4bf92f3577b34da6-00f067aa0ba902b7-01")])
    )
    assert line == (
        '{"httpRequest": {"requestMethod": "GET", "requestUrl": "/path?q\\u003D1", "requestSize": "0", '
        '"status": 200, "responseSize": "5", "userAgent": "curl/8.0", "remoteIp": "10.0.0.1:4567", '
        '"serverIp": "10.0.0.7", "referer": "", "latency": "0.0123s", "protocol": "HTTP/1.1"}, '
        '"traceId": "4bf92f3577b34da6"}\n'
    )
    assert json.loads(line)["httpRequest"]["requestUrl"] == "/path?q=1"


TRICKY = [
    '/a?b="c"&d=<e>',
    "/\\back\\slash",
    "/ctrl\x00\x01\x1f\x7f\t\r\n",
    "/unicode/é/日本/\u2028\u2029\u00a0/😀",
    "/</script><script>alert(1)</script>",
]


@pytest.mark.parametrize("value", TRICKY)
def test_default_template_is_valid_json_for_tricky_inputs(value: str) -> None:
    line = RequestLogTemplate.parse(DEFAULT_REQUEST_LOG_TEMPLATE).render(
        make_input(request_uri=value, headers=[("User-Agent", value), ("Referer", value)], remote_addr=value)
    )
    assert line.endswith("}\n") and line.count("\n") == 1
    req = json.loads(line)["httpRequest"]
    assert req["requestUrl"] == req["userAgent"] == req["referer"] == req["remoteIp"] == value


def test_apostrophe_is_escaped_like_go_even_though_json_rejects_it() -> None:
    # Go's js escaper writes \' (valid JavaScript, not JSON), so the stock default template emits
    # an unparsable line for a URL with an apostrophe; a drop-in replacement reproduces that.
    line = RequestLogTemplate.parse(DEFAULT_REQUEST_LOG_TEMPLATE).render(make_input(request_uri="/it's"))
    assert '"requestUrl": "/it\\\'s"' in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="'", max_codepoint=0xFFFF)))
def test_default_template_round_trips_any_bmp_text(value: str) -> None:
    line = RequestLogTemplate.parse(DEFAULT_REQUEST_LOG_TEMPLATE).render(
        make_input(request_uri=value, headers=[("User-Agent", value)])
    )
    assert line.count("\n") == 1  # one record per line, whatever the input
    req = json.loads(line)["httpRequest"]
    assert req["requestUrl"] == value
    assert req["userAgent"] == value


def test_undecodable_bytes_pass_through_like_go() -> None:
    t = RequestLogTemplate.parse("{{js .Request.UserAgent}}")
    out = t.render_bytes(make_input(headers=[(b"User-Agent", b'a\xff\xfeb"')]))
    assert out == b'a\xff\xfeb\\"\n'


# --------------------------------------------------------------------------- Go escaping and printing


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain text 123", "plain text 123"),
        ("It'd be nice.", "It\\'d be nice."),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("<b>&amp;=</b>", "\\u003Cb\\u003E\\u0026amp;\\u003D\\u003C/b\\u003E"),
        ("\x00\x01\x1b\x1f", "\\u0000\\u0001\\u001B\\u001F"),
        ("\t\n\r", "\\u0009\\u000A\\u000D"),
        ("\x7f", "\x7f"),  # DEL is not special in Go's jsIsSpecial
        ("é日本😀", "é日本😀"),  # printable runes are kept
        ("\u00a0\u2028\u200b", "\\u00A0\\u2028\\u200B"),  # non-printable runes: upper-case hex
        ("\U000e0001", "\\uE0001"),  # Go's %04X: more digits for astral runes
        ("/", "/"),
    ],
)
def test_js_escape_matches_go(raw: str, escaped: str) -> None:
    assert js_escape(raw) == escaped


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (2.5, "2.5"),
        (0.0123, "0.0123"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (123456.0, "123456"),
        (999999.5, "999999.5"),
        (1234567.0, "1.234567e+06"),
        (1e21, "1e+21"),
        (608863452348.1149, "6.088634523481149e+11"),
        (-3.25e-07, "-3.25e-07"),
        (5e-324, "5e-324"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_go_float_formatting(value: float, text: str) -> None:
    assert go_float(value) == text


def test_latency_prints_like_go() -> None:
    assert render("{{.Response.Latency}}", latency=0.000012) == "1.2e-05\n"
    assert render("{{.Response.Latency}}", latency=2.0) == "2\n"


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("x-b3-traceid", "X-B3-Traceid"),
        ("USER-AGENT", "User-Agent"),
        ("traceparent", "Traceparent"),
        ("a b", "a b"),
    ],
)
def test_canonical_header_key(key: str, canonical: str) -> None:
    assert canonical_header_key(key) == canonical


# --------------------------------------------------------------------------- data model


def test_request_fields() -> None:
    tpl = (
        "{{.Request.Method}} {{.Request.RequestURI}} {{.Request.Proto}} {{.Request.ProtoMajor}}"
        " {{.Request.ProtoMinor}} {{.Request.Host}} {{.Request.RemoteAddr}} {{.Request.ContentLength}}"
        " {{.Request.UserAgent}} {{.Request.Referer}}"
    )
    assert render(tpl, content_length=-1) == (
        "GET /path?q=1 HTTP/1.1 1 1 hello.default.example.com 10.0.0.1:4567 -1 curl/8.0 http://r/\n"
    )


def test_url_fields() -> None:
    tpl = "{{.Request.URL}}|{{.Request.URL.Path}}|{{.Request.URL.RawQuery}}|{{.Request.URL.String}}"
    assert render(tpl, request_uri="/a%20b/c?x=1&y=2") == "/a%20b/c?x=1&y=2|/a b/c|x=1&y=2|/a%20b/c?x=1&y=2\n"


def test_response_and_revision_fields() -> None:
    tpl = (
        "{{.Response.Code}} {{.Response.Size}} {{.Revision.Name}} {{.Revision.Namespace}}"
        " {{.Revision.Service}} {{.Revision.Configuration}} {{.Revision.PodName}} {{.Revision.PodIP}}"
    )
    assert (
        render(tpl, code=503, size=0) == "503 0 hello-00001 default hello hello hello-00001-deployment-abc 10.0.0.7\n"
    )
    # Structs print as Go's %v does.
    assert render("{{.Response}} {{.Revision}}") == (
        "{200 5 0.0123} {hello-00001 default hello hello hello-00001-deployment-abc 10.0.0.7}\n"
    )


def test_headers_map_get_index_and_host_removal() -> None:
    headers = [("x-multi", "a"), ("X-Multi", "b"), ("Host", "h"), ("accept", "*/*")]
    assert render('{{index .Request.Header "X-Multi"}}', headers=headers) == "[a b]\n"
    assert render('{{index .Request.Header "x-multi"}}', headers=headers) == "[]\n"  # map keys are canonical
    assert render('{{.Request.Header.Get "x-multi"}}', headers=headers) == "a\n"
    assert render('{{.Request.Header.Values "X-MULTI"}}', headers=headers) == "[a b]\n"
    assert render('{{.Request.Header.Get "missing"}}|', headers=headers) == "|\n"
    assert render("{{.Request.Header.Accept}}", headers=headers) == "[*/*]\n"
    assert render("{{.Request.Header}}", headers=headers) == "map[Accept:[*/*] X-Multi:[a b]]\n"
    assert render('{{"X-Multi" | .Request.Header.Get}}', headers=headers) == "a\n"


@pytest.mark.parametrize(
    ("headers", "trace_id"),
    [
        (
            [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
            "0af7651916cd43dd8448eb211c80319c",
        ),
        ([("X-B3-TraceId", "80f198ee56343ba8"), ("traceparent", "00-aaa-bbb-01")], "aaa"),
        ([("x-b3-traceid", "80f198ee56343ba8")], "80f198ee56343ba8"),
        ([("traceparent", "garbage"), ("X-B3-Traceid", "b3")], "b3"),
        ([], ""),
    ],
)
def test_trace_id(headers: list[tuple[str, str]], trace_id: str) -> None:
    assert render("{{.TraceID}}", headers=headers) == trace_id + "\n"


# --------------------------------------------------------------------------- template language


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("no actions", "no actions\n"),
        ("ends with newline\n", "ends with newline\n"),
        ("{{.Request.Method | js}}", "GET\n"),
        ("{{js .Request.Method .Response.Code}}", "GET200\n"),
        ('{{print "a" 1 2 "b"}}', "a1 2b\n"),
        ('{{println "a" 1}}', "a 1\n\n"),
        ('{{html "<a href=\\"x\\">&\'"}}', "&lt;a href=&#34;x&#34;&gt;&amp;&#39;\n"),
        ('{{urlquery "a b&c/é"}}', "a+b%26c%2F%C3%A9\n"),
        (
            "{{\"lit\\t\\x41\\u00e9\"}} {{`raw\\n`}} {{42}} {{-1}} {{1.5}} {{0x1F}} {{'a'}} {{true}}",
            "lit\tAé raw\\n 42 -1 1.5 31 97 true\n",
        ),
        ("{{if eq .Response.Code 200}}ok{{else}}bad{{end}}", "ok\n"),
        ("{{if eq .Response.Code 404 500}}x{{else if lt .Response.Code 300}}2xx{{else}}y{{end}}", "2xx\n"),
        ("{{if and .Request.UserAgent (not .Request.Referer)}}a{{else}}b{{end}}", "a\n"),
        ("{{if and .Request.UserAgent .Request.Referer}}a{{else}}b{{end}}", "b\n"),
        ('{{or (.Request.Header.Get "X-None") "fallback"}}', "fallback\n"),
        ('{{if .Request.Header.Get "X-None"}}y{{end}}|', "|\n"),
        ("{{with .Revision}}{{.Name}}/{{.Namespace}}{{end}}", "hello-00001/default\n"),
        ('{{with .Request.Header.Get "X-None"}}y{{else}}none{{end}}', "none\n"),
        ("{{$m := .Request.Method}}{{$m}}-{{$.Response.Code}}", "GET-200\n"),
        ('{{range $i, $v := .Request.Header.Values "X-M"}}{{$i}}={{$v}};{{else}}empty{{end}}', "0=a;1=b;\n"),
        ('{{range .Request.Header.Values "X-None"}}{{.}}{{else}}empty{{end}}', "empty\n"),
        ("a  {{- .Request.Method -}}  b", "aGETb\n"),
        ("a {{/* a comment */}} b", "a  b\n"),
        ("a {{- /* trimmed */ -}} b", "ab\n"),
        ('{{len .Request.Method}} {{len "é"}}', "3 2\n"),
        ('{{(index .Request.Header "X-M")}} {{index (.Request.Header.Values "X-M") 1}}', "[a b] b\n"),
        ('{{printf "%s" "}}"}}', "}}\n"),
    ],
)
def test_template_language(template: str, expected: str) -> None:
    assert render(template, headers=[("X-M", "a"), ("X-M", "b"), ("User-Agent", "ua")]) == expected


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ('"%s %d %v"', ".Request.Method .Response.Code .Response.Latency", "GET 200 0.0123"),
        ('"%q"', '"a\\"b\\n"', '"a\\"b\\n"'),
        (
            '"%.3f|%8.2f|%e"',
            ".Response.Latency .Response.Latency .Response.Latency",
            "0.012|    0.01|1.230000e-02",
        ),
        (
            '"%5d|%-5d|%05d|%x|%X"',
            ".Response.Size .Response.Size .Response.Size 255 255",
            "    5|5    |00005|ff|FF",
        ),
        ('"%10s|%-6s|%.2s"', '"abc" "abc" "abc"', "       abc|abc   |ab"),
        ('"%v %s"', '(.Request.Header.Values "X-M") (.Request.Header.Values "X-M")', "[a b] [a b]"),
        ('"%d%%"', "50", "50%"),
        ('"%t %g"', "true .Response.Latency", "true 0.0123"),
        ('"%d"', '"x"', "%!d(string=x)"),
        ('"%s"', ".Response.Code", "%!s(int=200)"),
        ('"%f"', "1", "%!f(int=1)"),
        ('"%s %s"', '"a"', "a %!s(MISSING)"),
        ('"%s"', '"a" 3', "a%!(EXTRA int=3)"),
    ],
)
def test_printf(fmt: str, args: str, expected: str) -> None:
    assert render(f"{{{{printf {fmt} {args}}}}}", headers=[("X-M", "a"), ("X-M", "b")]) == expected + "\n"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{{something}}", 'function "something" not defined'),
        ("{{ .Request.Method", "unclosed action"),
        ("{{if .Request.Method}}x", "missing {{end}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{else}}", "unexpected {{else}}"),
        ('{{"open}}', "unterminated quoted string"),
        ("{{$undefined}}", "undefined variable"),
        ("{{.A | }}", "missing value"),
        ("{{}}", "missing value"),
        ("{{(.A}}", "unclosed left paren"),
        ('{{template "x"}}', "not supported"),
        ("{{/* no end }}", "unclosed comment"),
        ('{{"a"b}}', "bad character"),
        ('{{"\\q"}}', "invalid escape"),
    ],
)
def test_parse_errors_name_the_template(template: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid request log template") as info:
        RequestLogTemplate.parse(template)
    assert fragment in str(info.value)
    assert repr(template) in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{.Request.NoSuchField}}",
        "{{.Nope}}",
        "{{.Response.Code.Deeper}}",
        '{{index .Request.Method "x"}}',
        "{{index .Request.Header.Values 3}}",
        '{{eq .Response.Code "200"}}',
        "{{.Request}}",
        '{{.Request.Method "arg"}}',
        '{{.Request.Header.Get "a" "b"}}',
    ],
)
def test_execution_errors_write_go_fallback_line(template: str) -> None:
    out = render(template, method="POST", code=500, latency=1.5, request_uri="/x?y=1")
    assert out == "Invalid request log template: method: POST, response code: 500, latency: 1.5, url: /x?y=1\n"


def test_missing_header_indexed_like_knative_issue_15981() -> None:
    # knative/serving#15981: `index (index .Request.Header "X-B3-Traceid") 0` fails without the header.
    tpl = '{"traceID": "{{index (index .Request.Header "X-B3-Traceid") 0}}"}'
    assert render(tpl, headers=[("X-B3-TraceId", "abc")]) == '{"traceID": "abc"}\n'
    assert render(tpl, headers=[]).startswith("Invalid request log template: method: GET, response code: 200")


def test_execution_error_discards_partial_output() -> None:
    out = render("partial {{.Request.Method}} {{.Bad}}")
    assert out.startswith("Invalid request log template:")
