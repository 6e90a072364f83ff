package report

import (
	"strings"
	"testing"
)

func TestEsc(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"ns1.fi-hel.k.ripe.net", "ns1.fi-hel.k.ripe.net"},
		{"M-NRT-JPNAP-1", "M-NRT-JPNAP-1"},
		{"<img src=x onerror=alert(1)>", `&lt;img src\=x onerror\=alert\(1\)&gt;`},
		{"a|b\n# heading", `a&#124;b\\u000A\# heading`},
		{"`x` *y* _z_ [a](b) ![c](d)", "\\`x\\` \\*y\\* \\_z\\_ \\[a\\]\\(b\\) \\!\\[c\\]\\(d\\)"},
		{`&amp; "q" 'q' \`, `&amp;amp; &quot;q&quot; &#39;q&#39; \\`},
		{"www.example.com WWW.x", `www\.example.com WWW\.x`},
		{"http://x mailto:a@b", `http\://x mailto\:a\@b`},
		{"$x$ ~~y~~ {z} ^w", `\$x\$ \~\~y\~\~ \{z\} \^w`},
		{"\u202egnp.exe\u200b\u2028\x00\x7f\u0085", `\\u202Egnp.exe\\u200B\\u2028\\u0000\\u007F\\u0085`},
		{"\xff", "\uFFFD"},
		{"日本語 ÅMS", "日本語 ÅMS"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := esc(tt.in); got != tt.want {
			t.Errorf("esc(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEscCuts(t *testing.T) {
	t.Parallel()
	got := esc(strings.Repeat("é", 1000))
	if want := strings.Repeat("é", maxCell) + "…"; got != want {
		t.Errorf("esc of 1000 runes = %d bytes, want %d runes and an ellipsis", len(got), maxCell)
	}
	if got := esc(strings.Repeat("a", maxCell)); strings.HasSuffix(got, "…") {
		t.Errorf("esc cut a string of exactly maxCell runes")
	}
}

func TestEscNoRawSignificantCharacters(t *testing.T) {
	t.Parallel()
	for start := rune(0); start < 0x3000; start += 50 {
		var chunk strings.Builder
		for r := start; r < start+50; r++ {
			chunk.WriteRune(r)
		}
		got := esc(chunk.String())
		for _, c := range "<>|\n\r\t\x00\u2028\u202e" {
			if strings.ContainsRune(got, c) {
				t.Errorf("esc(U+%04X..) contains %q", start, c)
			}
		}
	}
}
