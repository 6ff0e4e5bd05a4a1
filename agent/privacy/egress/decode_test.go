package egress

import "testing"

func TestUnescapeJSONUndoesEveryEscape(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"simple escapes", `a\"b\\c\/d\be\ff\ng\rh\ti`, "a\"b\\c/d\be\ff\ng\rh\ti"},
		{"\\u in either case", `\u0041\u00e9\u00E9`, "Aéé"},
		{"a surrogate pair", `\ud83d\ude00`, "😀"},
		{"a lone high surrogate", `\ud83dx`, "\ufffdx"},
		{"a lone low surrogate", `\ude00`, "\ufffd"},
		{"a short \\u", `\u00`, `\u00`},
		{"a bad \\u", `\u00zz`, `\u00zz`},
		{"an unknown escape", `\q`, `\q`},
		{"a trailing backslash", `ab\`, `ab\`},
		{"nothing to do", `plain`, `plain`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(unescapeJSON(nil, []byte(tt.in))); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnescapePercentUndoesPercentAndPlus(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"upper and lower hex", `%41%6a%6A`, "Ajj"},
		{"plus as space", `a+b`, "a b"},
		{"an encoded plus stays a plus", `a%2Bb`, "a+b"},
		{"a bad escape", `%zz%4`, `%zz%4`},
		{"a trailing percent", `50%`, `50%`},
		{"UTF-8 bytes", `caf%C3%A9`, "café"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(unescapePercent(nil, []byte(tt.in))); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNormalizeMapPointsBackIntoTheOriginal(t *testing.T) {
	in := []byte("AÉ\xff\u212a-_") // U+212A is the Kelvin sign, 3 bytes, folding to "k"
	got, at := normalizeMap(in)
	if string(got) != "aé\xffk+/" {
		t.Fatalf("normalized %q", got)
	}
	want := []int{0, 1, 1, 3, 4, 7, 8, 9}
	if len(at) != len(want) {
		t.Fatalf("map %v, want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("map %v, want %v", at, want)
		}
	}
}

func TestStableBase64IsFoundAtEveryOffset(t *testing.T) {
	v := []byte("CanaryNet-5G")
	for o := range 3 {
		if n := len(stableBase64(v, o)); n < 10 {
			t.Fatalf("alignment %d: only %d stable characters", o, n)
		}
	}
	g := New()
	g.Set(KindSSID, string(v))
	for pre := range 7 {
		for post := range 4 {
			data := append(append(make([]byte, pre), v...), make([]byte, post)...)
			for _, enc := range []string{b64std(data), b64url(data)} {
				if g.Check([]byte(enc)) == nil {
					t.Fatalf("%d bytes before, %d after: %s not refused", pre, post, enc)
				}
			}
		}
	}
}
