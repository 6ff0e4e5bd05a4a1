package onboard_test

import (
	"fmt"

	"github.com/camagent/camagent/agent/privacy/onboard"
)

func ExampleParse() {
	s, err := onboard.Parse([]byte(`CAMSETUP:V:1;S:My\;Net;T:WPA;P:correct horse;C:Zm9vYmFyLWNsYWltLXRva2Vu;N:Porch;Z:Europe/Paris;;`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s)
	_, err = onboard.Parse([]byte(`CAMSETUP:V:1;S:x;T:WPA;P:hunter2;C:Zm9vYmFyLWNsYWltLXRva2Vu;;`))
	fmt.Println(err)
	// Output:
	// onboard.Setup{ssid:[redacted] security:WPA passphrase:[redacted] hidden:false claim:sha256:8551de08 nickname:[redacted] tz:Europe/Paris}
	// onboard: passphrase: 7 characters, need 8..63 or 64 hex digits
}
