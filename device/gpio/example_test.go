package gpio_test

import (
	"context"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	camgpio "github.com/camagent/camagent/device/gpio"
)

// A privacy switch reports its level as soon as it runs. On a board, the pin comes from Open;
// here it is periph's fake, left open (high, with the pull-up): privacy on.
func ExampleNewSwitch() {
	changes := make(chan bool, 1)
	sw, err := camgpio.NewSwitch(camgpio.SwitchConfig{
		Pin:      &gpiotest.Pin{N: "GPIO22"},
		OnChange: func(on bool) { changes <- on },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = sw.Run(ctx)
	}()
	fmt.Println("privacy on:", <-changes)
	cancel()
	wg.Wait()
	// Output: privacy on: true
}

// The agent builds its hardware from the configured pin names; on a machine without GPIO
// every component is nil and does nothing.
func ExampleOpen() {
	pins, err := camgpio.Open(camgpio.Names{}) // no pins named in the configuration
	if err != nil {
		fmt.Println(err)
		return
	}
	led := camgpio.NewLED(camgpio.LEDConfig{Pin: pins.LED})
	led.SetState(camgpio.Connecting) // a no-op without an LED
	fmt.Println("LED present:", led != nil, "state:", led.State())
	// Output: LED present: false state: off
}

var _ gpio.PinIO = (*gpiotest.Pin)(nil)
