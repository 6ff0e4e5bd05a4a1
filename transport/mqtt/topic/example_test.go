package topic_test

import (
	"fmt"

	"github.com/camagent/camagent/transport/mqtt/topic"
)

func ExampleParse() {
	fmt.Println(topic.DeviceCmd("cam-0042"))
	id, dir, leaf, ok := topic.Parse("dev/cam-0042/down/cmd")
	fmt.Println(id, dir, leaf, ok)
	_, _, _, ok = topic.Parse("dev/+/down/cmd")
	fmt.Println(ok)
	// Output:
	// dev/cam-0042/down/cmd
	// cam-0042 down cmd true
	// false
}
