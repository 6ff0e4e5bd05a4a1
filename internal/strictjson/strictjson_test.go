package strictjson

import "testing"

func TestUnmarshal(t *testing.T) {
	type T struct {
		A int `json:"a"`
	}
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"a plain object decodes", `{"a":1}`, true},
		{"an unknown field is refused", `{"a":1,"b":2}`, false},
		{"trailing data is refused", `{"a":1} {"a":2}`, false},
		{"trailing garbage is refused", `{"a":1}x`, false},
		{"a wrong type is refused", `{"a":"1"}`, false},
		{"empty input is refused", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v T
			if err := Unmarshal([]byte(tc.in), &v); (err == nil) != tc.ok {
				t.Fatalf("Unmarshal(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}
